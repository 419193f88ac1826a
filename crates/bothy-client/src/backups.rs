//! Typed calls for directory backups.

use bothy_api::backup::{Backup, BackupList, CreateBackup, RestoreBackup, RestoreResult};
use http::Method;

use crate::{Client, ClientError};

impl Client {
    /// Backs up a directory of a sandbox.
    pub async fn create_backup(
        &self,
        sandbox: &str,
        req: &CreateBackup,
    ) -> Result<Backup, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{sandbox}/backups"),
            Some(req),
        )
        .await
    }

    pub async fn list_backups(&self) -> Result<BackupList, ClientError> {
        self.json(Method::GET, "/v1/backups", None::<&()>).await
    }

    pub async fn get_backup(&self, id: &str) -> Result<Backup, ClientError> {
        self.json(Method::GET, &format!("/v1/backups/{id}"), None::<&()>)
            .await
    }

    pub async fn delete_backup(&self, id: &str) -> Result<(), ClientError> {
        self.json_bytes(Method::DELETE, &format!("/v1/backups/{id}"), None::<&()>)
            .await
            .map(|_| ())
    }

    /// Restores a backup into a sandbox (default path: the backed-up one).
    pub async fn restore_backup(
        &self,
        id: &str,
        req: &RestoreBackup,
    ) -> Result<RestoreResult, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/backups/{id}/restore"),
            Some(req),
        )
        .await
    }
}
