//! Typed calls for sandboxes, exec, files and images.

use bothy_api::exec::{ExecRequest, ExecResult};
use bothy_api::files::{Exists, FileEntry, FileList, MkdirRequest, MoveRequest, WriteResult};
use bothy_api::sandbox::{
    CreateSandbox, ImageInfo, ImageList, ImportImage, SandboxInfo, SandboxList,
};
use bytes::Bytes;
use http::Method;
use hyper::body::Incoming;

use crate::{q, sse::SseStream, Body, Client, ClientError};

impl Client {
    /// Get-or-create.
    pub async fn put_sandbox(
        &self,
        name: &str,
        spec: &CreateSandbox,
    ) -> Result<SandboxInfo, ClientError> {
        self.json(Method::PUT, &format!("/v1/sandboxes/{name}"), Some(spec))
            .await
    }

    pub async fn get_sandbox(&self, name: &str) -> Result<SandboxInfo, ClientError> {
        self.json(Method::GET, &format!("/v1/sandboxes/{name}"), None::<&()>)
            .await
    }

    pub async fn list_sandboxes(&self) -> Result<SandboxList, ClientError> {
        self.json(Method::GET, "/v1/sandboxes", None::<&()>).await
    }

    pub async fn sleep_sandbox(&self, name: &str) -> Result<SandboxInfo, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{name}/sleep"),
            None::<&()>,
        )
        .await
    }

    pub async fn wake_sandbox(&self, name: &str) -> Result<SandboxInfo, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{name}/wake"),
            None::<&()>,
        )
        .await
    }

    pub async fn delete_sandbox(&self, name: &str) -> Result<(), ClientError> {
        self.json_bytes(
            Method::DELETE,
            &format!("/v1/sandboxes/{name}"),
            None::<&()>,
        )
        .await
        .map(|_| ())
    }

    pub async fn exec(&self, name: &str, req: &ExecRequest) -> Result<ExecResult, ClientError> {
        self.json(
            Method::POST,
            &format!("/v1/sandboxes/{name}/exec"),
            Some(req),
        )
        .await
    }

    pub async fn exec_stream(
        &self,
        name: &str,
        req: &ExecRequest,
    ) -> Result<SseStream, ClientError> {
        self.sse(
            Method::POST,
            &format!("/v1/sandboxes/{name}/exec"),
            Some(req),
        )
        .await
    }

    /// Reads a file; the body streams.
    pub async fn read_file(&self, name: &str, path: &str) -> Result<Incoming, ClientError> {
        let req = self
            .request(
                Method::GET,
                &format!("/v1/sandboxes/{name}/files?path={}", q(path)),
            )
            .body(crate::empty())
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        Ok(Self::check(self.send(req).await?).await?.into_body())
    }

    /// Reads a whole file into memory.
    pub async fn read_file_bytes(&self, name: &str, path: &str) -> Result<Bytes, ClientError> {
        use http_body_util::BodyExt;
        Ok(self
            .read_file(name, path)
            .await?
            .collect()
            .await
            .map_err(ClientError::Http)?
            .to_bytes())
    }

    /// Writes a file from a streaming body.
    pub async fn write_file(
        &self,
        name: &str,
        path: &str,
        mode: Option<u32>,
        body: Body,
    ) -> Result<WriteResult, ClientError> {
        let mut uri = format!("/v1/sandboxes/{name}/files?path={}", q(path));
        if let Some(m) = mode {
            uri.push_str(&format!("&mode={m:o}"));
        }
        let req = self
            .request(Method::PUT, &uri)
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        let resp = Self::check(self.send(req).await?).await?;
        use http_body_util::BodyExt;
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(ClientError::Http)?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn list_files(
        &self,
        name: &str,
        path: &str,
        recursive: bool,
    ) -> Result<FileList, ClientError> {
        self.json(
            Method::GET,
            &format!(
                "/v1/sandboxes/{name}/files/list?path={}&recursive={recursive}",
                q(path)
            ),
            None::<&()>,
        )
        .await
    }

    pub async fn stat_file(&self, name: &str, path: &str) -> Result<FileEntry, ClientError> {
        self.json(
            Method::GET,
            &format!("/v1/sandboxes/{name}/files/stat?path={}", q(path)),
            None::<&()>,
        )
        .await
    }

    pub async fn file_exists(&self, name: &str, path: &str) -> Result<bool, ClientError> {
        let e: Exists = self
            .json(
                Method::GET,
                &format!("/v1/sandboxes/{name}/files/exists?path={}", q(path)),
                None::<&()>,
            )
            .await?;
        Ok(e.exists)
    }

    pub async fn mkdir(&self, name: &str, req: &MkdirRequest) -> Result<(), ClientError> {
        self.json_bytes(
            Method::POST,
            &format!("/v1/sandboxes/{name}/files/mkdir"),
            Some(req),
        )
        .await
        .map(|_| ())
    }

    pub async fn move_file(&self, name: &str, req: &MoveRequest) -> Result<(), ClientError> {
        self.json_bytes(
            Method::POST,
            &format!("/v1/sandboxes/{name}/files/move"),
            Some(req),
        )
        .await
        .map(|_| ())
    }

    pub async fn remove_file(
        &self,
        name: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), ClientError> {
        self.json_bytes(
            Method::DELETE,
            &format!(
                "/v1/sandboxes/{name}/files?path={}&recursive={recursive}",
                q(path)
            ),
            None::<&()>,
        )
        .await
        .map(|_| ())
    }

    pub async fn list_images(&self) -> Result<ImageList, ClientError> {
        self.json(Method::GET, "/v1/images", None::<&()>).await
    }

    pub async fn import_image(&self, req: &ImportImage) -> Result<ImageInfo, ClientError> {
        self.json(Method::POST, "/v1/images", Some(req)).await
    }
}
