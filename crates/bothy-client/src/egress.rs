//! Typed calls for secrets and egress logs.

use bothy_api::egress::{EgressLog, SecretInfo, SecretList};
use http::Method;

use crate::{collect_checked, full, q, Client, ClientError};

impl Client {
    /// Sets a secret; the value is sent as the request body and never comes back.
    pub async fn set_secret(&self, name: &str, value: &str) -> Result<SecretInfo, ClientError> {
        let req = self
            .request(Method::PUT, &format!("/v1/secrets/{}", q(name)))
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(full(value.to_string()))
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        let bytes = collect_checked(self.send(req).await?).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn list_secrets(&self) -> Result<SecretList, ClientError> {
        self.json(Method::GET, "/v1/secrets", None::<&()>).await
    }

    pub async fn delete_secret(&self, name: &str) -> Result<(), ClientError> {
        self.json_bytes(
            Method::DELETE,
            &format!("/v1/secrets/{}", q(name)),
            None::<&()>,
        )
        .await
        .map(|_| ())
    }

    /// The sandbox's egress log, oldest first (the last `limit` entries if given).
    pub async fn egress_log(
        &self,
        name: &str,
        limit: Option<usize>,
    ) -> Result<EgressLog, ClientError> {
        let query = limit.map(|n| format!("?limit={n}")).unwrap_or_default();
        self.json(
            Method::GET,
            &format!("/v1/sandboxes/{name}/egress-log{query}"),
            None::<&()>,
        )
        .await
    }
}
