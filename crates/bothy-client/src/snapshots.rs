//! Typed calls for snapshots, forks and restores.

use bothy_api::sandbox::{CreateSandbox, SandboxInfo};
use bothy_api::snapshot::{
    CreateSnapshot, ForkRequest, ForkResult, RestoreRequest, SnapshotInfo, SnapshotList,
};
use http::Method;

use crate::{q, Client, ClientError};

impl Client {
    /// Takes a snapshot of sandbox `name` (running or sleeping).
    pub async fn create_snapshot(
        &self,
        name: &str,
        snapshot_name: Option<&str>,
    ) -> Result<SnapshotInfo, ClientError> {
        let body = CreateSnapshot {
            name: snapshot_name.map(str::to_string),
        };
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{}/snapshots", q(name)),
            Some(&body),
        )
        .await
    }

    /// Snapshots taken of sandbox `name`, oldest first.
    pub async fn sandbox_snapshots(&self, name: &str) -> Result<SnapshotList, ClientError> {
        self.json(
            Method::GET,
            &format!("/v1/sandboxes/{}/snapshots", q(name)),
            None::<&()>,
        )
        .await
    }

    pub async fn list_snapshots(&self) -> Result<SnapshotList, ClientError> {
        self.json(Method::GET, "/v1/snapshots", None::<&()>).await
    }

    /// By id or name.
    pub async fn get_snapshot(&self, id: &str) -> Result<SnapshotInfo, ClientError> {
        self.json(
            Method::GET,
            &format!("/v1/snapshots/{}", q(id)),
            None::<&()>,
        )
        .await
    }

    pub async fn delete_snapshot(&self, id: &str) -> Result<(), ClientError> {
        self.json_bytes(
            Method::DELETE,
            &format!("/v1/snapshots/{}", q(id)),
            None::<&()>,
        )
        .await
        .map(|_| ())
    }

    /// Creates and starts sandbox `new` as a fork of `snapshot`.
    pub async fn fork_snapshot(
        &self,
        snapshot: &str,
        new: &str,
    ) -> Result<SandboxInfo, ClientError> {
        let spec = CreateSandbox {
            from_snapshot: Some(snapshot.to_string()),
            ..Default::default()
        };
        self.put_sandbox(new, &spec).await
    }

    /// Creates several forks at once (asleep; each wakes on its first request).
    pub async fn fork_many(
        &self,
        snapshot: &str,
        req: &ForkRequest,
    ) -> Result<ForkResult, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/snapshots/{}/fork", q(snapshot)),
            Some(req),
        )
        .await
    }

    /// Puts sandbox `name` back to `snapshot` (its own changes since are discarded).
    pub async fn restore_sandbox(
        &self,
        name: &str,
        snapshot: &str,
    ) -> Result<SandboxInfo, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{}/restore", q(name)),
            Some(&RestoreRequest {
                snapshot: snapshot.to_string(),
            }),
        )
        .await
    }
}
