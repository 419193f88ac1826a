//! The user namespace that idmapped lower layers are mapped through (`0 uid_base 65536`).
//!
//! A namespace is only reachable through a process, so a short-lived child unshares a user
//! namespace, the (privileged) caller writes its maps from outside, keeps an fd of
//! `/proc/CHILD/ns/user`, and kills it. The fd keeps the namespace alive as long as needed.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;

use super::sys;

/// Creates the mapping namespace. The caller must be single-threaded (it forks).
pub fn userns_fd(uid_base: u32) -> io::Result<OwnedFd> {
    let (ready_r, ready_w) = sys::pipe()?;
    let (hold_r, hold_w) = sys::pipe()?;
    // SAFETY: the init process is single-threaded.
    let pid = unsafe { sys::fork()? };
    if pid == 0 {
        drop(ready_r);
        drop(hold_w);
        // SAFETY: only async-signal-safe syscalls until _exit.
        unsafe {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                libc::_exit(1);
            }
        }
        let _ = sys::write_all(&ready_w, b"u");
        // Blocks until the parent kills us (or closes its end).
        let _ = sys::read_byte(&hold_r);
        // SAFETY: terminating the helper child.
        unsafe { libc::_exit(0) };
    }
    drop(ready_w);
    drop(hold_r);
    let result = (|| {
        if sys::read_byte(&ready_r)?.is_none() {
            return Err(io::Error::other("helper could not create a user namespace"));
        }
        let map = format!("0 {uid_base} 65536\n");
        fs::write(format!("/proc/{pid}/uid_map"), &map)?;
        fs::write(format!("/proc/{pid}/gid_map"), &map)?;
        let f = fs::File::open(format!("/proc/{pid}/ns/user"))?;
        Ok(OwnedFd::from(f))
    })();
    drop(hold_w);
    // SAFETY: killing and reaping our own helper child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = sys::waitpid(pid);
    result
}
