//! A small seccomp deny-list installed on the agent (and so on every sandbox process).
//!
//! It refuses (`EPERM`) system calls that a development sandbox has no use for and that expose
//! kernel surface shared with the host: kernel keyrings (not namespaced), `bpf`,
//! `perf_event_open`, `userfaultfd` (a classic exploitation primitive), `io_uring` (a long
//! series of CVEs; Docker blocks it too), module and kexec loading, swap, accounting, clock
//! setting, `open_by_handle_at` (the "shocker" escape) and raw port I/O. Other architectures'
//! ABIs (i386 compat, x32) are refused outright (`ENOSYS`), so the list cannot be bypassed
//! through another syscall table. Everything else is allowed: it is a deny-list on top of the
//! namespaces, not the primary boundary.

use std::io;

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS (0x20)
const BPF_JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JSET_K: u16 = 0x05 | 0x40; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
/// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64

/// The refused system calls of this architecture.
pub fn denied() -> Vec<libc::c_long> {
    let mut v = vec![
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_open_by_handle_at,
        libc::SYS_lookup_dcookie,
        libc::SYS_quotactl,
        libc::SYS_syslog,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([libc::SYS_iopl, libc::SYS_ioperm, libc::SYS_uselib]);
    v
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The filter program.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn program() -> Vec<libc::sock_filter> {
    let mut p = vec![
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        stmt(BPF_LD_W_ABS, OFF_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    p.extend([
        // x32 syscalls share the arch value and set bit 30 of the number.
        jump(BPF_JSET_K, 0x4000_0000, 0, 1),
        stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
    ]);
    for nr in denied() {
        p.push(jump(BPF_JEQ_K, nr as u32, 0, 1));
        p.push(stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32));
    }
    p.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    p
}

/// Installs the filter on the calling thread (requires `no_new_privs`); inherited across
/// `fork` and `execve`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn install() -> io::Result<()> {
    let prog = program();
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel copies the program.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// No filter for this architecture yet (the list above is x86-64/aarch64 specific).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn install() -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_shape() {
        let p = program();
        assert!(p.len() < 256, "jump offsets are u8 and BPF_MAXINSNS is far");
        assert_eq!(p.last().unwrap().k, SECCOMP_RET_ALLOW);
        assert_eq!(p[0].k, OFF_ARCH);
        // Each denied syscall is a compare followed by an EPERM return.
        let denies = p
            .iter()
            .filter(|i| i.code == BPF_RET_K && i.k == SECCOMP_RET_ERRNO | libc::EPERM as u32)
            .count();
        assert_eq!(denies, denied().len());
    }

    /// Runs the filter in a forked child (it cannot be removed once installed).
    #[test]
    fn denies_listed_syscalls_and_allows_others() {
        // SAFETY: the child only makes raw syscalls and exits with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: plain syscalls in the child.
            unsafe {
                let code = (|| {
                    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || install().is_err()
                    {
                        return 10;
                    }
                    let r = libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0);
                    if r != -1 || *libc::__errno_location() != libc::EPERM {
                        return 11;
                    }
                    if libc::syscall(libc::SYS_getpid) <= 0 {
                        return 12;
                    }
                    #[cfg(target_arch = "x86_64")]
                    {
                        // x32 getpid.
                        let r = libc::syscall(0x4000_0000 | libc::SYS_getpid);
                        if r != -1 || *libc::__errno_location() != libc::ENOSYS {
                            return 13;
                        }
                    }
                    0
                })();
                libc::_exit(code);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "status {status}");
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }
}
