//! Opening TCP connections inside sandboxes' network namespaces, fast.
//!
//! A sandbox's port is reached on its own loopback: the daemon creates the socket *in the
//! sandbox's network namespace*, then connects from its own context (the kernel does the rest,
//! with no hop through the agent). Rather than a thread and a `setns` per connection, each
//! sandbox that serves previews gets one long-lived thread that entered its network namespace
//! once and only ever creates unconnected sockets on request (it runs nothing the sandbox
//! controls). The thread belongs to one run of the sandbox (its init pid): after a
//! sleep and wake a new one is made, and a thread left idle for [`IDLE`] exits.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use bothy_api::SandboxName;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// How long a socket maker waits for work before it exits.
const IDLE: Duration = Duration::from_secs(120);

type Reply = oneshot::Sender<std::io::Result<std::net::TcpStream>>;

struct Maker {
    pid: i32,
    tx: mpsc::Sender<Reply>,
}

/// Socket makers, one per sandbox run.
#[derive(Default)]
pub struct Sockets {
    makers: Mutex<HashMap<SandboxName, Maker>>,
}

impl Sockets {
    /// Connects to `127.0.0.1:port` in the network namespace `netns` of sandbox `name`, whose
    /// init is `pid`.
    pub async fn connect(
        &self,
        name: &SandboxName,
        pid: i32,
        netns: &OwnedFd,
        port: u16,
    ) -> std::io::Result<TcpStream> {
        let sock = self.socket(name, pid, netns).await?;
        let sock = tokio::net::TcpSocket::from_std_stream(sock);
        let stream = sock
            .connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into())
            .await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn socket(
        &self,
        name: &SandboxName,
        pid: i32,
        netns: &OwnedFd,
    ) -> std::io::Result<std::net::TcpStream> {
        // Two tries: a maker that exited while idle is replaced once.
        for _ in 0..2 {
            let (reply, rx) = oneshot::channel();
            let sent = {
                let mut makers = self.makers.lock().unwrap_or_else(|e| e.into_inner());
                let fresh = makers.get(name).is_none_or(|m| m.pid != pid);
                if fresh {
                    makers.insert(
                        name.clone(),
                        Maker {
                            pid,
                            tx: spawn_maker(netns.try_clone()?)?,
                        },
                    );
                }
                makers.get(name).map(|m| m.tx.send(reply).is_ok())
            };
            if sent == Some(true) {
                if let Ok(r) = rx.await {
                    return r;
                }
            }
            self.makers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(name);
        }
        Err(std::io::Error::other(
            "could not open a socket in the sandbox",
        ))
    }
}

/// A thread that enters `netns` and answers each request with a new unconnected socket.
fn spawn_maker(netns: OwnedFd) -> std::io::Result<mpsc::Sender<Reply>> {
    let (tx, rx) = mpsc::channel::<Reply>();
    std::thread::Builder::new()
        .name("preview-sockets".into())
        .spawn(move || {
            let entered = rustix::thread::move_into_link_name_space(
                netns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            );
            drop(netns);
            while let Ok(reply) = rx.recv_timeout(IDLE) {
                let r = match entered {
                    Ok(()) => unconnected_socket(),
                    Err(e) => Err(e.into()),
                };
                let _ = reply.send(r);
            }
        })?;
    Ok(tx)
}

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
