//! Typed calls for directory backups.

use bothy_api::backup::{Backup, BackupList, CreateBackup, Progress, RestoreBackup, RestoreResult};
use http::Method;
use serde::de::DeserializeOwned;

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

    /// [`Self::create_backup`], calling `on` with each progress event (a few per second).
    pub async fn create_backup_progress(
        &self,
        sandbox: &str,
        req: &CreateBackup,
        on: impl FnMut(&Progress),
    ) -> Result<Backup, ClientError> {
        self.progress(
            &format!("/v1/sandboxes/{sandbox}/backups"),
            req,
            "backup",
            on,
        )
        .await
    }

    /// [`Self::restore_backup`], calling `on` with each progress event.
    pub async fn restore_backup_progress(
        &self,
        id: &str,
        req: &RestoreBackup,
        on: impl FnMut(&Progress),
    ) -> Result<RestoreResult, ClientError> {
        self.progress(&format!("/v1/backups/{id}/restore"), req, "restored", on)
            .await
    }

    async fn progress<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        done: &str,
        mut on: impl FnMut(&Progress),
    ) -> Result<T, ClientError> {
        let mut events = self.sse(Method::POST, path, Some(body)).await?;
        while let Some(ev) = events.next().await? {
            match ev.event.as_str() {
                "progress" => on(&ev.json::<Progress>()?),
                "error" => return Err(ClientError::Api(ev.json()?)),
                e if e == done => return ev.json(),
                _ => {}
            }
        }
        Err(ClientError::Decode(
            "the progress stream ended without a result".into(),
        ))
    }
}
