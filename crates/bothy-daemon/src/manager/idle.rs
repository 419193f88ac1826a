//! Putting idle sandboxes to sleep.
//!
//! A sandbox is active while a request or stream to it is open, when a request arrived in the
//! last `sleep_after` seconds, or while it uses CPU (more than 2% of a core since the last
//! check) — so a long build with no client attached is not put to sleep mid-way.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bothy_api::time::now_ms;
use bothy_api::SandboxName;
use tokio_util::sync::CancellationToken;

use super::Manager;

/// CPU use (fraction of one core) above which a sandbox counts as busy.
const BUSY_CPU_FRACTION: f64 = 0.02;

impl Manager {
    pub fn spawn_idle_loop(self: &Arc<Self>, every: Duration, stop: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut cpu: HashMap<SandboxName, u64> = HashMap::new();
            let mut ticks: u64 = 0;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(every) => {}
                }
                ticks += 1;
                this.idle_tick(every, &mut cpu).await;
                if ticks.is_multiple_of(10) {
                    this.flush_activity();
                }
            }
        });
    }

    async fn idle_tick(self: &Arc<Self>, every: Duration, cpu: &mut HashMap<SandboxName, u64>) {
        let now = now_ms();
        for slot in self.slots() {
            if slot.running().is_none() {
                cpu.remove(&slot.name);
                continue;
            }
            let Some(rec) = slot.record() else { continue };
            if slot.active_count() > 0 {
                slot.touch();
            }
            if let Ok(u) = self.runtime.usage(&slot.name) {
                let prev = cpu.insert(slot.name.clone(), u.cpu_usage_ns);
                if let Some(prev) = prev {
                    let busy_ns = every.as_nanos() as f64 * BUSY_CPU_FRACTION;
                    if u.cpu_usage_ns.saturating_sub(prev) as f64 > busy_ns {
                        slot.touch();
                    }
                }
            }
            if rec.keep_alive {
                continue;
            }
            let deadline = now - (rec.sleep_after_secs as i64) * 1000;
            if slot.last_activity_ms().max(rec.last_activity_ms) <= deadline {
                let this = self.clone();
                tokio::spawn(async move { this.sleep_if_idle(&slot, deadline).await });
            }
        }
    }
}
