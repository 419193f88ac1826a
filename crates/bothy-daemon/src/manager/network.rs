//! A sandbox's network through its lifecycle: link on start/wake, mode and policy changes at
//! runtime (`PUT /v1/sandboxes/{name}/network`), nothing to do on stop (dropping the network
//! namespace destroys the pair; the address is forgotten).

use std::sync::Arc;

use bothy_api::network::{EgressPolicy, NetworkConfig, NetworkInfo, NetworkMode};
use bothy_api::{ErrorCode, SandboxName};

use super::{Manager, Running, Slot};
use crate::error::DaemonError;

impl Manager {
    /// The stored network of `name`. A sandbox without one (created before networking) has
    /// `none`.
    pub(crate) fn network_of(&self, name: &SandboxName) -> Result<NetworkConfig, DaemonError> {
        Ok(self
            .store
            .get_network(name)
            .map_err(|e| DaemonError::internal("read network config", &e))?
            .unwrap_or(NetworkConfig {
                mode: NetworkMode::None,
                policy: EgressPolicy::default(),
            }))
    }

    /// The config a new sandbox gets: the requested one, else `proxy` with every host allowed
    /// where this host can do it and `none` where it cannot.
    pub(crate) fn network_for_new(
        &self,
        requested: Option<NetworkConfig>,
    ) -> Result<NetworkConfig, DaemonError> {
        match requested {
            Some(c) => {
                self.check_network(&c)?;
                Ok(c)
            }
            None if self.net.check_available().is_ok() => Ok(NetworkConfig::default()),
            None => Ok(NetworkConfig {
                mode: NetworkMode::None,
                policy: EgressPolicy::default(),
            }),
        }
    }

    /// Refuses configs this host cannot apply or that do not make sense.
    pub(crate) fn check_network(&self, c: &NetworkConfig) -> Result<(), DaemonError> {
        validate_policy(&c.policy)?;
        if c.mode == NetworkMode::Proxy {
            if let Err(e) = self.net.check_available() {
                return Err(DaemonError::new(
                    ErrorCode::NetworkUnavailable,
                    format!("{e}; mode `none` works without it"),
                ));
            }
        }
        Ok(())
    }

    /// Gives a just-started sandbox its link if its mode is `proxy`. Called by start before the
    /// sandbox is handed out.
    pub(crate) async fn net_attach(
        &self,
        name: &SandboxName,
        started: &bothy_runtime::Started,
        cfg: &NetworkConfig,
    ) -> Result<(), DaemonError> {
        if cfg.mode != NetworkMode::Proxy {
            return Ok(());
        }
        if let Some(reason) = self.net.unavailable_reason() {
            // Fail closed: the sandbox runs with loopback only.
            tracing::warn!(sandbox = %name, reason, "proxy networking unavailable; sandbox starts without a link");
            return Ok(());
        }
        let netns = self
            .runtime
            .netns(started)
            .map_err(|e| DaemonError::internal("open the sandbox's network namespace", &e))?;
        self.net
            .attach(name, netns, Arc::new(cfg.policy.clone()))
            .await
            .map_err(|e| {
                tracing::error!(sandbox = %name, error = ?e, "network setup failed");
                DaemonError::new(
                    ErrorCode::SandboxUnavailable,
                    format!(
                        "sandbox {name}: network setup failed: {}",
                        crate::error::error_chain(&e)
                    ),
                )
            })?;
        Ok(())
    }

    /// Writes `/etc/resolv.conf` in a running sandbox (once at creation in `proxy` mode and on
    /// a switch to it: the sandbox's layer keeps it across sleep). A failure (an image whose
    /// `/etc` cannot be written) is logged, not fatal: the sandbox works, by address.
    pub(crate) async fn write_resolv_conf(&self, running: &Running) {
        if let Err(e) = self.try_write_resolv_conf(running).await {
            tracing::warn!(error = ?e.0, "could not write the sandbox's /etc/resolv.conf");
        }
    }

    async fn try_write_resolv_conf(&self, running: &Running) -> Result<(), DaemonError> {
        let body = crate::net::resolv_conf(self.net.gateway());
        running
            .agent_put(
                "/v1/files?path=/etc/resolv.conf&mode=644",
                None,
                body.into(),
                "write /etc/resolv.conf",
            )
            .await?;
        Ok(())
    }

    /// `GET /v1/sandboxes/{name}/network`.
    pub async fn get_network(&self, name: &SandboxName) -> Result<NetworkInfo, DaemonError> {
        if self
            .store
            .get_sandbox(name)
            .map_err(|e| DaemonError::internal("read sandbox record", &e))?
            .is_none()
        {
            return Err(DaemonError::not_found(name));
        }
        let cfg = self.network_of(name)?;
        Ok(self.network_info(name, cfg))
    }

    pub(crate) fn network_info(&self, name: &SandboxName, cfg: NetworkConfig) -> NetworkInfo {
        let address = self.net.addr_of(name);
        NetworkInfo {
            mode: cfg.mode,
            policy: cfg.policy,
            gateway: address.map(|_| self.net.gateway().to_string()),
            address: address.map(|a| a.to_string()),
        }
    }

    /// `PUT /v1/sandboxes/{name}/network`: stores the config and applies it at once to a
    /// running sandbox (a sleeping one gets it when it wakes).
    pub async fn set_network(
        self: &Arc<Self>,
        name: &SandboxName,
        cfg: NetworkConfig,
    ) -> Result<NetworkInfo, DaemonError> {
        self.check_network(&cfg)?;
        let slot = self.slot(name);
        let _lock = slot.lifecycle.lock().await;
        if self.load(&slot)?.is_none() {
            drop(_lock);
            self.forget_slot(name);
            return Err(DaemonError::not_found(name));
        }
        let old = self.network_of(name)?;
        self.store
            .put_network(name, &cfg)
            .map_err(|e| DaemonError::internal("write network config", &e))?;
        if let Some(running) = slot.running() {
            self.apply_network(&slot, &running, &old, &cfg).await?;
        }
        Ok(self.network_info(name, cfg))
    }

    pub(crate) async fn apply_network(
        &self,
        slot: &Arc<Slot>,
        running: &Running,
        old: &NetworkConfig,
        new: &NetworkConfig,
    ) -> Result<(), DaemonError> {
        let name = &slot.name;
        let attached = self.net.addr_of(name).is_some();
        match new.mode {
            NetworkMode::Proxy if attached => {
                self.net.set_policy(name, Arc::new(new.policy.clone()));
            }
            NetworkMode::Proxy => {
                self.net_attach(name, &running.started, new).await?;
                if old.mode != NetworkMode::Proxy {
                    self.write_resolv_conf(running).await;
                }
            }
            NetworkMode::None => {
                self.net
                    .detach_live(name)
                    .await
                    .map_err(|e| DaemonError::internal("remove the sandbox's link", &e))?;
            }
        }
        Ok(())
    }
}

/// Checks what the daemon can check of a policy (the proxy evaluates it).
pub fn validate_policy(p: &EgressPolicy) -> Result<(), DaemonError> {
    let globs = p
        .deny
        .iter()
        .chain(&p.allow)
        .chain(p.rules.iter().map(|r| &r.host));
    for g in globs {
        let host = match g.rsplit_once(':') {
            Some((h, port)) => {
                if port.parse::<u16>().map_or(true, |p| p == 0) {
                    return Err(DaemonError::invalid(format!(
                        "{g:?}: the port after ':' must be a number from 1 to 65535"
                    )));
                }
                h
            }
            None => g.as_str(),
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'*'))
        {
            return Err(DaemonError::invalid(format!(
                "{g:?} is not a host glob (letters, digits, '.', '-', '_', '*', optionally :PORT)"
            )));
        }
    }
    for r in &p.rules {
        if let Some(u) = &r.upstream {
            let ok = u
                .strip_prefix("http://")
                .or_else(|| u.strip_prefix("https://"))
                .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
            if !ok {
                return Err(DaemonError::invalid(format!(
                    "rule {:?}: upstream {u:?} must be http://HOST[:PORT] or https://HOST[:PORT]",
                    r.host
                )));
            }
        }
        for (h, v) in &r.headers {
            if h.is_empty()
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(DaemonError::invalid(format!(
                    "rule {:?}: {h:?} is not a header name",
                    r.host
                )));
            }
            if v.secret.is_some() == v.value.is_some() {
                return Err(DaemonError::invalid(format!(
                    "rule {:?}, header {h:?}: give exactly one of `secret` and `value`",
                    r.host
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bothy_api::network::{HeaderValue, HostRule};

    #[test]
    fn policies_are_checked() {
        let ok = EgressPolicy {
            deny: vec!["*.evil.test".into()],
            allow: vec!["db.internal:5432".into()],
            rules: vec![HostRule {
                host: "api.example.test".into(),
                headers: [(
                    "authorization".to_string(),
                    HeaderValue {
                        secret: Some("tok".into()),
                        value: None,
                        format: Some("Bearer {secret}".into()),
                    },
                )]
                .into(),
                upstream: Some("https://127.0.0.1:8443".into()),
            }],
            ..Default::default()
        };
        assert!(validate_policy(&ok).is_ok());
        let mut bad = ok.clone();
        bad.allow = vec!["db:0".into()];
        assert!(validate_policy(&bad).is_err());
        let mut bad = ok.clone();
        bad.deny = vec!["a b".into()];
        assert!(validate_policy(&bad).is_err());
        let mut bad = ok.clone();
        bad.rules[0].upstream = Some("ftp://x".into());
        assert!(validate_policy(&bad).is_err());
        let mut bad = ok;
        bad.rules[0].headers.get_mut("authorization").unwrap().value = Some("x".into());
        assert!(validate_policy(&bad).is_err());
    }
}
