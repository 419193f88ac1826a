//! A sandbox's veth pair: created and configured from a throw-away thread that enters the
//! sandbox's network namespace half-way, and read back after a daemon restart.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};

use super::netlink;

/// Name of the sandbox-side link.
pub(super) const SANDBOX_LINK: &str = "eth0";

/// `bx` + the address in hex: unique per address on the machine, so the kernel refuses a
/// second link for an address in use (also by another daemon).
pub(super) fn host_link_name(addr: Ipv4Addr) -> String {
    format!("bx{:08x}", u32::from(addr))
}

/// Runs `f` on a fresh thread that exits afterwards (it may enter a sandbox's namespace: such
/// a thread must never go back to a pool).
pub(super) async fn in_thread<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bothy-netns".into())
        .spawn(move || {
            let _ = tx.send(f());
        })?;
    rx.await.map_err(std::io::Error::other)?
}

/// Creates the pair and configures both ends. Runs on a throw-away thread (it enters the
/// sandbox's namespace half-way).
pub(super) fn setup_link(
    netns: OwnedFd,
    addr: Ipv4Addr,
    gateway: Ipv4Addr,
    group: u32,
) -> std::io::Result<()> {
    let host_name = host_link_name(addr);
    let step = |what: &'static str| {
        move |e: std::io::Error| {
            tracing::debug!(link = %host_link_name(addr), error = %e, "link setup: {what} failed");
            e
        }
    };
    let mut host = netlink::Netlink::open().map_err(step("open netlink"))?;
    host.add_veth(&host_name, group, SANDBOX_LINK, &netns)
        .map_err(step("create the veth pair"))?;
    let idx = netlink::link_index(&host_name).map_err(step("find the host link"))?;
    let configured = (|| {
        host.add_addr_ptp(idx, gateway, addr)
            .map_err(step("address the host link"))?;
        host.set_up(idx).map_err(step("bring the host link up"))?;
        rustix::thread::move_into_link_name_space(
            netns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(std::io::Error::from)
        .map_err(step("enter the sandbox's namespace"))?;
        let mut ns = netlink::Netlink::open().map_err(step("open netlink in the sandbox"))?;
        let eth = netlink::link_index(SANDBOX_LINK).map_err(step("find eth0"))?;
        ns.add_addr_ptp(eth, addr, gateway)
            .map_err(step("address eth0"))?;
        ns.set_up(eth).map_err(step("bring eth0 up"))?;
        ns.add_default_route(eth, gateway)
            .map_err(step("add the default route"))
    })();
    if let Err(e) = configured {
        // `host` was opened before the thread left the host's namespace: it still talks to it.
        let _ = host.del_link(idx);
        return Err(e);
    }
    Ok(())
}

/// The IPv4 address of link `name` in the calling thread's namespace.
pub(super) fn link_addr(name: &str) -> std::io::Result<Ipv4Addr> {
    use rustix::net::{socket_with, AddressFamily, SocketFlags, SocketType};
    let sock = socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    for (d, c) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = c as libc::c_char;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: SIOCGIFADDR reads ifr_name and writes ifr_addr inside `req`, which lives across
    // the call; the fd is a valid socket.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFADDR, &mut req) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: after a successful SIOCGIFADDR the union holds a sockaddr_in.
    let sin: libc::sockaddr_in = unsafe {
        std::ptr::read_unaligned(&req.ifr_ifru.ifru_addr as *const _ as *const libc::sockaddr_in)
    };
    Ok(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
}
