//! Host sysctls a machine running many sandboxes needs: raised when lower, never lowered.

use std::fs;

const MINIMUMS: [(&str, u64); 3] = [
    ("kernel/pid_max", 4_194_304),
    ("fs/inotify/max_user_instances", 8192),
    ("fs/inotify/max_user_watches", 1_048_576),
];

/// Raises each sysctl to its minimum; logs and continues when it cannot.
pub fn raise_limits() {
    for (key, min) in MINIMUMS {
        let path = format!("/proc/sys/{key}");
        let current = fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        match current {
            Some(v) if v >= min => {}
            _ => {
                if let Err(e) = fs::write(&path, min.to_string()) {
                    tracing::warn!(sysctl = key, error = %e, "cannot raise sysctl; continuing");
                } else {
                    tracing::info!(sysctl = key, value = min, "raised sysctl");
                }
            }
        }
    }
}
