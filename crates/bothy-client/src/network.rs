//! Typed calls for sandbox networking and git checkout.

use bothy_api::git::CheckoutRequest;
use bothy_api::network::{NetworkConfig, NetworkInfo};
use http::Method;

use crate::{sse::SseStream, Client, ClientError};

impl Client {
    pub async fn get_network(&self, name: &str) -> Result<NetworkInfo, ClientError> {
        self.json(
            Method::GET,
            &format!("/v1/sandboxes/{name}/network"),
            None::<&()>,
        )
        .await
    }

    pub async fn put_network(
        &self,
        name: &str,
        cfg: &NetworkConfig,
    ) -> Result<NetworkInfo, ClientError> {
        self.json(
            Method::PUT,
            &format!("/v1/sandboxes/{name}/network"),
            Some(cfg),
        )
        .await
    }

    /// `git clone` inside the sandbox: `progress` events, then `done` or `error`.
    pub async fn git_checkout(
        &self,
        name: &str,
        req: &CheckoutRequest,
    ) -> Result<SseStream, ClientError> {
        self.sse(
            Method::POST,
            &format!("/v1/sandboxes/{name}/git/checkout"),
            Some(req),
        )
        .await
    }
}
