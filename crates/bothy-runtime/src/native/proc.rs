//! Facts about host processes: start time (pid-reuse-safe identity), pidfds, namespaces.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::sys;

/// Field 22 of `/proc/PID/stat` (start time in clock ticks since boot).
pub fn start_time(pid: i32) -> io::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad stat"))
}

/// Whether `pid` runs (exists and is not a zombie) with start time `start_time`.
pub fn is_running(pid: i32, start_time: u64) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    parse_start_time(&stat) == Some(start_time) && !matches!(parse_state(&stat), Some('Z' | 'X'))
}

/// Field 3 of `/proc/PID/stat` (R, S, D, Z, ...).
pub fn parse_state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// The comm field may hold spaces and parentheses: fields are counted after the last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")" come fields 3.. ; field 22 is the 20th of them.
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub fn pidfd(pid: i32) -> io::Result<OwnedFd> {
    sys::pidfd_open(pid)
}

/// Waits until the process behind `pidfd` has exited; `false` on timeout.
pub fn wait_exit(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut p = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if r > 0 {
            return true;
        }
        if r == 0 {
            return false;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return false;
        }
    }
}

/// Reaps `pid` if it is our (exited) child; never blocks, ignores ECHILD.
pub fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid on one specific pid, valid out pointer.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_start_time_with_odd_comm() {
        let stat = "42 (a b) c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("garbage"), None);
        assert_eq!(parse_state(stat), Some('S'));
        assert_eq!(parse_state("1 (x) Z 0"), Some('Z'));
    }

    #[test]
    fn own_start_time_is_stable() {
        let me = std::process::id() as i32;
        let t = start_time(me).unwrap();
        assert_eq!(t, start_time(me).unwrap());
        assert!(is_running(me, t));
        assert!(!is_running(me, t + 1));
    }
}
