//! The configuration the runtime hands to `bothy __sandbox-init` (JSON through a pipe on
//! [`CONFIG_FD`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The fd number on which the init reads its JSON config (the agent listener is fd 3).
pub const CONFIG_FD: i32 = 4;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitConfig {
    /// Sandbox name, used as the hostname.
    pub hostname: String,
    /// Host uid/gid that is root inside; 65536 ids are mapped.
    pub uid_base: u32,
    /// Every `cgroup.procs` the init joins before creating namespaces.
    pub cgroup_procs: Vec<PathBuf>,
    pub overlays: Vec<InitOverlay>,
    pub rootfs_dir: PathBuf,
    pub state_dir: PathBuf,
    pub agent_binary: PathBuf,
    pub agent_args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitOverlay {
    pub target: String,
    /// (path, idmap), top-most first.
    pub lowers: Vec<(PathBuf, bool)>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

impl InitConfig {
    pub fn needs_idmap(&self) -> bool {
        self.overlays
            .iter()
            .any(|o| o.lowers.iter().any(|(_, idmap)| *idmap))
    }

    /// Checks what the init relies on, so a bad spec fails with a clear message before any
    /// namespace exists.
    pub fn validate(&self) -> Result<(), String> {
        let first = self.overlays.first().ok_or("no overlay for the root")?;
        if first.target != "/" {
            return Err(format!(
                "first overlay targets {:?}, not \"/\"",
                first.target
            ));
        }
        for o in &self.overlays {
            if o.lowers.is_empty() {
                return Err(format!("overlay {:?} has no lower layer", o.target));
            }
            if !o.target.starts_with('/') || o.target.split('/').any(|c| c == "..") {
                return Err(format!(
                    "overlay target {:?} is not a clean absolute path",
                    o.target
                ));
            }
        }
        for o in &self.overlays[1..] {
            if o.target == "/" {
                return Err("only the first overlay may target \"/\"".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> InitConfig {
        InitConfig {
            hostname: "a".into(),
            uid_base: 1_000_000,
            cgroup_procs: vec!["/sys/fs/cgroup/x/cgroup.procs".into()],
            overlays: vec![
                InitOverlay {
                    target: "/".into(),
                    lowers: vec![("/img".into(), true)],
                    upper: "/u".into(),
                    work: "/w".into(),
                },
                InitOverlay {
                    target: "/usr".into(),
                    lowers: vec![("/snap".into(), false), ("/usr".into(), false)],
                    upper: "/u2".into(),
                    work: "/w2".into(),
                },
            ],
            rootfs_dir: "/r".into(),
            state_dir: "/s".into(),
            agent_binary: "/bin/bothy".into(),
            agent_args: vec!["agent".into()],
        }
    }

    #[test]
    fn round_trips_through_json() {
        let c = cfg();
        let back: InitConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(c.needs_idmap());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn rejects_bad_specs() {
        let mut c = cfg();
        c.overlays[0].target = "/usr".into();
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.overlays[1].target = "/usr/../etc".into();
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.overlays[1].lowers.clear();
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.overlays.clear();
        assert!(c.validate().is_err());
        assert!(serde_json::from_str::<InitConfig>("{\"hostname\":1}").is_err());
    }
}
