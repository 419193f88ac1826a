//! Process trees: preparing commands so their descendants stay findable, and killing a whole
//! tree.
//!
//! Every command the agent starts becomes a session and process-group leader and a *child
//! subreaper*, so descendants that daemonize (double fork) are reparented to the command rather
//! than to the agent while the command lives. [`kill_tree`] then finds them by parent links,
//! process group and session, stops them all first (so nothing forks away mid-kill), and signals
//! them.

use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes `cmd` a new session and a child subreaper when it starts.
pub fn isolate(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // syscalls (setsid, prctl, sigprocmask) on the child's own state.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
}

#[derive(Debug, Clone, Copy)]
struct ProcStat {
    pid: i32,
    ppid: i32,
    pgrp: i32,
    session: i32,
}

fn read_stat(pid: i32) -> Option<ProcStat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain anything.
    let rest = &s[s.rfind(')')? + 2..];
    let mut f = rest.split(' ');
    let _state = f.next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    let session = f.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        ppid,
        pgrp,
        session,
    })
}

fn all_procs() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .collect()
}

/// `root` and every process descended from it, or in its process group or session.
pub fn tree(root: i32) -> HashSet<i32> {
    let procs = all_procs();
    let mut found: HashSet<i32> = HashSet::new();
    if procs.iter().any(|p| p.pid == root) {
        found.insert(root);
    }
    for p in &procs {
        if p.pgrp == root || p.session == root {
            found.insert(p.pid);
        }
    }
    loop {
        let before = found.len();
        for p in &procs {
            if found.contains(&p.ppid) {
                found.insert(p.pid);
            }
        }
        if found.len() == before {
            break;
        }
    }
    let me = std::process::id() as i32;
    found.remove(&me);
    found.remove(&1);
    found
}

/// Sends `signal` to the whole tree of `root` (see the module docs). Returns how many
/// processes were signalled.
pub fn kill_tree(root: i32, signal: i32) -> usize {
    let mut stopped: HashSet<i32> = HashSet::new();
    // Freeze until no new member appears, so a forking tree cannot outrun us.
    for _ in 0..50 {
        let members = tree(root);
        let new: Vec<i32> = members.difference(&stopped).copied().collect();
        if new.is_empty() {
            break;
        }
        for pid in new {
            // SAFETY: kill(2) with a plain pid and signal number.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            stopped.insert(pid);
        }
    }
    for &pid in &stopped {
        // SAFETY: as above.
        unsafe { libc::kill(pid, signal) };
    }
    if signal != libc::SIGKILL && signal != libc::SIGSTOP {
        for &pid in &stopped {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
    }
    stopped.len()
}

/// Kills the whole tree of `root` and waits (up to `limit`) until its processes are gone, so a
/// caller told "killed" can start new processes at once (a fork bomb's thousands of processes
/// hold the sandbox's pids limit until they are reaped). Waits asynchronously: the agent's
/// reaper must run meanwhile.
pub async fn kill_tree_and_wait(root: i32, limit: std::time::Duration) {
    let members = {
        let mut m = tree(root);
        m.insert(root);
        m
    };
    kill_tree(root, libc::SIGKILL);
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        let alive = members
            .iter()
            .any(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive && tree(root).is_empty() {
            return;
        }
        // Stragglers that were forking while we looked get the signal too.
        kill_tree(root, libc::SIGKILL);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Parses a signal given by name (`TERM`, `SIGKILL`, `int`) or number.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "WINCH" => libc::SIGWINCH,
        _ => return None,
    })
}
