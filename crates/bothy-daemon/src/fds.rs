//! The daemon's file descriptor budget. `RLIMIT_NOFILE` is raised to its hard limit at start
//! (`bothy_runtime`); what sandboxes can make the daemon open (preview and API connections on
//! the public TCP port, egress proxy connections) is capped so that it always leaves
//! [`RESERVED`] descriptors for everything else (the store, agents, sandboxes starting), half
//! of the rest for each of the two.

/// Descriptors kept out of every budget.
pub const RESERVED: u64 = 4096;
/// A budget is never below this, whatever the limit says.
const MIN: usize = 64;
/// Descriptors a relayed preview connection holds: two sockets, two pipes.
const PER_TCP_CONNECTION: u64 = 6;
/// Descriptors an egress proxy connection holds: the sandbox's socket and the upstream one.
const PER_EGRESS_CONNECTION: u64 = 2;

/// This process's soft `RLIMIT_NOFILE`.
pub fn nofile() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// How many things holding `each` descriptors fit in half of what is left after [`RESERVED`].
fn half_budget(each: u64) -> usize {
    (nofile().saturating_sub(RESERVED) / 2 / each)
        .try_into()
        .unwrap_or(usize::MAX)
        .max(MIN)
}

/// The most connections the TCP listener keeps open at once (API and previews together).
pub fn tcp_listener_connections() -> usize {
    half_budget(PER_TCP_CONNECTION)
}

/// The most connections the egress proxy keeps open at once, all sandboxes together.
pub fn egress_connections() -> usize {
    half_budget(PER_EGRESS_CONNECTION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_fit_the_limit_together() {
        let (tcp, egress) = (tcp_listener_connections(), egress_connections());
        assert!(tcp >= MIN && egress >= MIN);
        let used = tcp as u64 * PER_TCP_CONNECTION + egress as u64 * PER_EGRESS_CONNECTION;
        if nofile() > RESERVED + 2 * MIN as u64 * PER_TCP_CONNECTION {
            assert!(
                used + RESERVED <= nofile(),
                "{used} + {RESERVED} > {}",
                nofile()
            );
        }
    }
}
