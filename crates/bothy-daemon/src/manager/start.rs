//! Starting a sandbox (on create and on wake).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use bothy_api::agent::{AgentConfig, AgentEnv};
use bothy_api::sandbox::SandboxState;
use bothy_api::time::now_ms;
use bothy_api::ErrorCode;
use bothy_runtime::SandboxSpec;
use bothy_store::meta::{RuntimeRef, SandboxRecord};

use super::{Manager, Running, Slot};
use crate::agent_conn::AgentConn;
use crate::error::DaemonError;

impl Manager {
    /// Starts the sandbox of `rec`. Call with the slot's lifecycle lock held.
    pub(crate) async fn start_locked(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        mut rec: SandboxRecord,
    ) -> Result<Running, DaemonError> {
        let image = self.images.get(&rec.image)?;
        let network = self.network_of(&rec.name)?;
        self.pull_back_if_evicted(&rec.name).await?;
        let dirs = self.layout.sandbox(&rec.name);
        let mut overlays = self.images.overlays(&image, &rec.layers, &dirs)?;
        crate::egress::trust::add_layer(&mut overlays, &self.layout);
        let socket = dirs.agent_socket();
        let config = AgentConfig {
            name: rec.name.to_string(),
            env: rec.env.clone(),
            ..AgentConfig::default()
        };
        let config_json = serde_json::to_string(&config)
            .map_err(|e| DaemonError::internal("encode agent config", &e))?;
        let spec_dirs = dirs.clone();
        let runtime = self.runtime.clone();
        let agent_binary = self.agent_binary.clone();
        let limits = self.limits;
        let name = rec.name.clone();
        let sock = socket.clone();
        let started = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&spec_dirs.root)
                .map_err(|e| bothy_runtime::RuntimeError::io("create sandbox directory", e))?;
            let listener = bind_agent_socket(&sock)?;
            runtime.start(SandboxSpec {
                name,
                overlays,
                rootfs_dir: spec_dirs.rootfs(),
                state_dir: spec_dirs.state(),
                agent_binary,
                agent_args: vec!["agent".into(), "--config".into(), config_json],
                agent_listener: listener,
                limits,
            })
        })
        .await
        .map_err(|e| DaemonError::internal("start sandbox", &e))?
        .map_err(|e| {
            tracing::error!(sandbox = %rec.name, error = ?e, "sandbox failed to start");
            DaemonError::new(
                ErrorCode::SandboxUnavailable,
                format!(
                    "sandbox {} failed to start: {}",
                    rec.name,
                    crate::error::error_chain(&e)
                ),
            )
        })?;

        // The link comes up before anyone can use the sandbox.
        if let Err(e) = self.net_attach(&rec.name, &started, &network).await {
            let runtime = self.runtime.clone();
            let name = rec.name.clone();
            let _ = tokio::task::spawn_blocking(move || runtime.stop(&name, Some(started))).await;
            self.net.detach_record(&rec.name);
            return Err(e);
        }

        rec.state = SandboxState::Running;
        rec.runtime = Some(RuntimeRef {
            pid: started.pid,
            start_time: started.start_time,
        });
        rec.last_activity_ms = now_ms();
        if let Err(e) = self.save(slot, rec.clone()) {
            let runtime = self.runtime.clone();
            let name = rec.name.clone();
            let _ = tokio::task::spawn_blocking(move || runtime.stop(&name, Some(started))).await;
            self.net.detach_record(&rec.name);
            return Err(e);
        }
        let running = Running {
            started,
            agent: AgentConn::new(socket),
        };
        self.set_running(slot, Some(running.clone()));
        slot.touch();
        self.watch_exit(slot.clone(), started);
        tracing::info!(sandbox = %rec.name, pid = started.pid, "sandbox running");
        Ok(running)
    }

    /// Sends the sandbox-level environment to a running agent.
    pub(crate) async fn push_env(
        &self,
        running: &Running,
        rec: &SandboxRecord,
    ) -> Result<(), DaemonError> {
        let body = serde_json::to_vec(&AgentEnv {
            env: rec.env.clone(),
        })
        .map_err(|e| DaemonError::internal("encode env", &e))?;
        running
            .agent_put(
                "/v1/env",
                Some("application/json"),
                body,
                "update the sandbox environment",
            )
            .await?;
        Ok(())
    }
}

/// Binds the agent's socket on the host (never visible inside the sandbox) and returns the
/// listening fd the runtime hands to the agent.
fn bind_agent_socket(path: &std::path::Path) -> Result<OwnedFd, bothy_runtime::RuntimeError> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let l = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| bothy_runtime::RuntimeError::io("bind the agent socket", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| bothy_runtime::RuntimeError::io("chmod the agent socket", e))?;
    Ok(OwnedFd::from(l))
}
