//! Pseudo-terminals: opening a pair, starting a program on its slave side, and async I/O on
//! the master side.
//!
//! The slave is opened from the master with `TIOCGPTPEER`, so it works whatever path devpts is
//! mounted at (inside a sandbox the runtime mounts a private `/dev/pts` instance); `ptsname` is
//! the fallback for kernels without it. The program becomes a session leader with the slave as
//! its controlling terminal, and is started with [`crate::reaper::spawn`] like every child of
//! the agent.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;
use tokio::io::unix::AsyncFd;

use crate::reaper::{self, ExitWatch};

/// The master side of a pseudo-terminal, non-blocking, registered with tokio.
pub struct Master {
    fd: AsyncFd<OwnedFd>,
}

/// Opens a pty pair with the given size. Returns the master and the slave.
pub fn open(cols: u16, rows: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let slave = match rustix::pty::ioctl_tiocgptpeer(&master, flags) {
        Ok(s) => s,
        Err(_) => {
            let name = rustix::pty::ptsname(&master, Vec::new())?;
            rustix::fs::open(
                name.as_c_str(),
                rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )?
        }
    };
    set_size(&master, cols, rows)?;
    Ok((master, slave))
}

/// Sets the window size (the kernel sends `SIGWINCH` to the foreground process group).
pub fn set_size(fd: impl AsFd, cols: u16, rows: u16) -> io::Result<()> {
    rustix::termios::tcsetwinsize(
        fd,
        Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )?;
    Ok(())
}

/// Starts `cmd` on the slave side: its stdio is the slave, it is a new session (and child
/// subreaper, see [`crate::proctree::isolate`]) whose controlling terminal is the slave.
pub fn spawn(cmd: &mut Command, slave: &OwnedFd) -> io::Result<(std::process::Child, ExitWatch)> {
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave.try_clone()?));
    crate::proctree::isolate(cmd);
    // SAFETY: runs between fork and exec, after `isolate`'s setsid (pre_exec closures run in
    // order); TIOCSCTTY on fd 0 (the slave, already dup'ed there) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    reaper::spawn(cmd)
}

impl Master {
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        let flags = rustix::fs::fcntl_getfl(&fd)?;
        rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)?;
        // SAFETY: the `OwnedFd` is moved into the `AsyncFd` and owned by it until it drops, so
        // its raw fd stays open and the same for the whole registration.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    /// Reads some output. `Ok(0)` means the slave side is closed for good (every process that
    /// had it open is gone): Linux reports that as `EIO` on the master.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard
                .try_io(|fd| rustix::io::read(fd.get_ref(), &mut *buf).map_err(io::Error::from))
            {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data` (input for the program).
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| rustix::io::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        set_size(self.fd.get_ref(), cols, rows)
    }

    /// The foreground process group of the terminal, if there is one.
    pub fn foreground_pgrp(&self) -> Option<i32> {
        rustix::termios::tcgetpgrp(self.fd.get_ref())
            .ok()
            .map(|p| p.as_raw_nonzero().get())
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.get_ref().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_sets_the_size() {
        let (master, slave) = open(132, 43).unwrap();
        let ws = rustix::termios::tcgetwinsize(&slave).unwrap();
        assert_eq!((ws.ws_col, ws.ws_row), (132, 43));
        set_size(&master, 80, 24).unwrap();
        let ws = rustix::termios::tcgetwinsize(&slave).unwrap();
        assert_eq!((ws.ws_col, ws.ws_row), (80, 24));
    }
}
