//! Export, import and evict: plain JSON calls, and streaming forms that report progress.

use bothy_api::blob::{
    EvictRequest, EvictResult, ExportRequest, ExportResult, ImportRequest, ImportResult,
    TransferProgress,
};
use bothy_api::ApiError;
use http::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Client, ClientError};

impl Client {
    pub async fn export_snapshot(
        &self,
        id: &str,
        req: &ExportRequest,
    ) -> Result<ExportResult, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/snapshots/{id}/export"),
            Some(req),
        )
        .await
    }

    pub async fn import_snapshot(&self, req: &ImportRequest) -> Result<ImportResult, ClientError> {
        self.json(Method::POST, "/v1/snapshots/import", Some(req))
            .await
    }

    pub async fn evict(&self, name: &str, req: &EvictRequest) -> Result<EvictResult, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{name}/evict"),
            Some(req),
        )
        .await
    }

    /// Runs a transfer as an SSE stream, calling `on_progress` for each progress event, and
    /// returns its result.
    pub async fn transfer<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl Serialize + ?Sized),
        mut on_progress: impl FnMut(&TransferProgress),
    ) -> Result<T, ClientError> {
        let mut stream = self.sse(Method::POST, path, Some(body)).await?;
        while let Some(ev) = stream.next().await? {
            match ev.event.as_str() {
                "progress" => on_progress(&ev.json::<TransferProgress>()?),
                "result" => return ev.json(),
                "error" => return Err(ClientError::Api(ev.json::<ApiError>()?)),
                _ => {}
            }
        }
        Err(ClientError::Decode(
            "the transfer stream ended without a result".into(),
        ))
    }
}
