//! The few rtnetlink requests a sandbox link needs, hand-encoded.
//!
//! Setting up a sandbox's link is four requests: create a veth pair whose peer is born directly
//! in the sandbox's network namespace (moving a link costs ~38 ms, creating it there ~1 ms),
//! give the host end its point-to-point address, and in the sandbox give `eth0` its address and
//! a default route. Each request asks for an ACK and fails with the kernel's errno. No `ip`
//! command (8 of them cost ~11 ms) and no netlink crate: the messages are small and fixed.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;

const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_GROUP: u16 = 27;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_GATEWAY: u16 = 5;
const RTA_OIF: u16 = 4;
const NLA_F_NESTED: u16 = 0x8000;

const IFF_UP: u32 = 0x1;
const AF_INET: u8 = 2;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

/// A NETLINK_ROUTE socket in the network namespace of the thread that opened it (a socket
/// stays in the namespace it was created in, whatever thread uses it later).
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub fn open() -> io::Result<Self> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            None,
        )?;
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, 0))?;
        // Port 0 is the kernel: plain send/recv then talk to it.
        rustix::net::connect(&fd, &SocketAddrNetlink::new(0, 0))?;
        Ok(Self { fd, seq: 0 })
    }

    /// Creates the veth pair `host_name` (here, in interface group `group`) / `peer_name` (in
    /// the namespace `netns`), both down: a veth cannot be brought up while it is being created
    /// (its peer is not linked yet: `ENOTCONN`). Fails with `EEXIST` if `host_name` exists.
    pub fn add_veth(
        &mut self,
        host_name: &str,
        group: u32,
        peer_name: &str,
        netns: &OwnedFd,
    ) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        m.ifinfomsg(0, 0);
        m.attr_str(IFLA_IFNAME, host_name);
        m.attr(IFLA_GROUP, &group.to_ne_bytes());
        let info = m.nest(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "veth");
        let data = m.nest(IFLA_INFO_DATA);
        let peer = m.nest(VETH_INFO_PEER);
        m.ifinfomsg(0, 0);
        m.attr_str(IFLA_IFNAME, peer_name);
        m.attr(
            IFLA_NET_NS_FD,
            &(netns.as_fd().as_raw_fd() as u32).to_ne_bytes(),
        );
        m.end(peer);
        m.end(data);
        m.end(info);
        self.request(m)
    }

    /// Brings link `index` up.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, 0);
        m.ifinfomsg(index, IFF_UP);
        self.request(m)
    }

    /// Deletes the link `index` (and with a veth, its peer).
    pub fn del_link(&mut self, index: u32) -> io::Result<()> {
        let mut m = Msg::new(RTM_DELLINK, 0);
        m.ifinfomsg(index, 0);
        self.request(m)
    }

    /// Adds `local` with point-to-point `peer` (/32) to link `index`; the kernel adds the route
    /// to `peer` through the link.
    pub fn add_addr_ptp(&mut self, index: u32, local: Ipv4Addr, peer: Ipv4Addr) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
        // struct ifaddrmsg { family, prefixlen, flags, scope, index }
        m.buf
            .extend_from_slice(&[AF_INET, 32, 0, RT_SCOPE_UNIVERSE]);
        m.buf.extend_from_slice(&index.to_ne_bytes());
        m.attr(IFA_LOCAL, &local.octets());
        m.attr(IFA_ADDRESS, &peer.octets());
        self.request(m)
    }

    /// Adds the default route via `gateway` out of link `index`.
    pub fn add_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
        // struct rtmsg { family, dst_len, src_len, tos, table, protocol, scope, type, flags }
        m.buf.extend_from_slice(&[
            AF_INET,
            0,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
        ]);
        m.buf.extend_from_slice(&0u32.to_ne_bytes());
        m.attr(RTA_GATEWAY, &gateway.octets());
        m.attr(RTA_OIF, &index.to_ne_bytes());
        self.request(m)
    }

    /// Sends `m` and waits for its ACK.
    fn request(&mut self, mut m: Msg) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        m.finish(seq);
        rustix::net::send(&self.fd, &m.buf, SendFlags::empty())?;
        let mut buf = [0u8; 4096];
        loop {
            let (n, _) = rustix::net::recv(&self.fd, &mut buf, RecvFlags::empty())?;
            let mut msgs = &buf[..n];
            while msgs.len() >= 16 {
                let len = u32::from_ne_bytes(msgs[0..4].try_into().expect("4 bytes")) as usize;
                let ty = u16::from_ne_bytes(msgs[4..6].try_into().expect("2 bytes"));
                let mseq = u32::from_ne_bytes(msgs[8..12].try_into().expect("4 bytes"));
                if len < 16 || len > msgs.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink reply",
                    ));
                }
                if ty == NLMSG_ERROR && mseq == seq {
                    if len < 20 {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "short netlink error",
                        ));
                    }
                    let errno = i32::from_ne_bytes(msgs[16..20].try_into().expect("4 bytes"));
                    return if errno == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(-errno))
                    };
                }
                msgs = &msgs[align(len).min(msgs.len())..];
            }
        }
    }
}

/// The index of link `name` in the calling thread's network namespace.
pub fn link_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "link name with a NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; the function only
    // reads it.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i)
    }
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// One netlink message being built.
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(ty: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // seq, set by finish
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        Self { buf }
    }

    /// struct ifinfomsg { family, pad, type, index, flags, change }; only the bits in `flags`
    /// are changed (set).
    fn ifinfomsg(&mut self, index: u32, flags: u32) {
        self.buf.extend_from_slice(&[0, 0, 0, 0]);
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
    }

    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn attr_str(&mut self, ty: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(ty, &v);
    }

    /// Opens a nested attribute; returns its offset for [`Msg::end`].
    fn nest(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn end(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn finish(&mut self, seq: u32) {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_aligned_and_sized() {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE);
        m.ifinfomsg(0, IFF_UP);
        m.attr_str(IFLA_IFNAME, "bxv1"); // 4 + 5 bytes, padded to 12
        let n = m.nest(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "veth"); // 12
        m.end(n);
        m.finish(7);
        assert_eq!(m.buf.len(), 16 + 16 + 12 + 4 + 12);
        assert_eq!(
            u32::from_ne_bytes(m.buf[0..4].try_into().unwrap()) as usize,
            m.buf.len()
        );
        assert_eq!(u32::from_ne_bytes(m.buf[8..12].try_into().unwrap()), 7);
        // The nest's length covers its header and its child.
        assert_eq!(u16::from_ne_bytes(m.buf[44..46].try_into().unwrap()), 16);
        assert!(m.buf.len().is_multiple_of(4));
    }
}

#[cfg(test)]
mod live_tests {
    use super::*;

    #[test]
    fn kernel_answers_requests() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root (netlink requests)");
            return;
        }
        let mut nl = Netlink::open().unwrap();
        // No link has index 0x7fff_fff0: the kernel answers with an error, proving the round
        // trip works.
        let e = nl.del_link(0x7fff_fff0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV), "{e}");
    }
}
