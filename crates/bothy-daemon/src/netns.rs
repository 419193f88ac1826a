//! Opening TCP connections inside a sandbox's network namespace.
//!
//! A sandbox has only loopback. To reach a port inside it (preview URLs), the daemon creates the
//! socket *in the sandbox's network namespace* from a short-lived thread that enters it, then
//! connects from its own context: the kernel does the rest, with no hop through the agent. The
//! thread never runs anything the sandbox controls.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, OwnedFd};

use tokio::net::TcpStream;

/// Connects to `127.0.0.1:port` inside the network namespace `netns`.
pub async fn connect_in(netns: &OwnedFd, port: u16) -> std::io::Result<TcpStream> {
    let ns = netns.try_clone()?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A dedicated thread that exits afterwards: no pooled thread is ever left in the sandbox's
    // namespace, even if something below fails half-way.
    std::thread::Builder::new()
        .name("netns-connect".into())
        .spawn(move || {
            let r = rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(std::io::Error::from)
            .and_then(|()| unconnected_socket());
            let _ = tx.send(r);
        })?;
    let sock = rx.await.map_err(std::io::Error::other)??;
    let sock = tokio::net::TcpSocket::from_std_stream(sock);
    let stream = sock
        .connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into())
        .await?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// An unconnected, non-blocking TCP socket in the current thread's network namespace.
fn unconnected_socket() -> std::io::Result<std::net::TcpStream> {
    use rustix::net::{socket_with, AddressFamily, SocketFlags, SocketType};
    let fd = socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    Ok(std::net::TcpStream::from(fd))
}
