//! The capabilities a sandbox keeps.
//!
//! Root inside a sandbox holds capabilities only over its own user namespace, so most of them
//! could do no harm to the host. We still keep only what ordinary root work needs (the set
//! container runtimes grant by default, plus `SYS_PTRACE` for debuggers inside) and drop the rest
//! from the bounding set before the agent is executed: without `CAP_SYS_ADMIN` a sandbox cannot
//! mount anything, even in its own mount namespace, nor unshare new namespaces to attack the
//! kernel with; without `CAP_NET_ADMIN`/`NET_RAW`-style extras it cannot poke its network stack.
//! Every later process inherits the reduced bounding set.

/// Capabilities kept (numbers from `linux/capability.h`).
const KEEP: &[u32] = &[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    18, // CAP_SYS_CHROOT
    19, // CAP_SYS_PTRACE
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

/// Highest capability number the kernel knows (from `/proc/sys/kernel/cap_last_cap`).
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Drops every capability not in [`KEEP`] from the bounding set. Call after the user namespace
/// is entered (it needs `CAP_SETPCAP` there) and before `execve`: the agent, as root, then gets
/// exactly the bounding set as its permitted and effective sets.
pub fn drop_bounding_set() -> std::io::Result<()> {
    for cap in 0..=last_cap() {
        if KEEP.contains(&cap) {
            continue;
        }
        // SAFETY: prctl(PR_CAPBSET_DROP) with a capability number; no pointers.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            // EINVAL: the kernel does not know this capability; nothing to drop.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e);
            }
        }
    }
    Ok(())
}
