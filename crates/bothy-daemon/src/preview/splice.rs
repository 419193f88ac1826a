//! Moving bytes between two sockets without copying them through user space: `splice(2)`
//! through a pipe, each direction on its own, driven by tokio's readiness.
//!
//! Measured here (bench/preview-proxy) it moves large bodies markedly faster than a
//! `copy_bidirectional` with 64 KiB buffers, at the same cost for small messages (two
//! syscalls per chunk either way).

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::pipe::{splice, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Capacity asked for each direction's pipe (the kernel may give less).
const PIPE_SIZE: usize = 1 << 20;

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

fn pipe() -> io::Result<Pipe> {
    let (read, write) = rustix::pipe::pipe_with(
        rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
    )?;
    // A larger pipe moves more per syscall; failing to grow it is harmless.
    let _ = rustix::pipe::fcntl_setpipe_size(&write, PIPE_SIZE);
    Ok(Pipe { read, write })
}

/// Moves bytes from `src` to `dst` until `src` reaches end of file, then shuts down the write
/// side of `dst`.
async fn one_way(src: &TcpStream, dst: &TcpStream) -> io::Result<()> {
    let p = pipe()?;
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    loop {
        // The pipe is empty here, so EAGAIN can only mean the socket has nothing to read.
        let mut in_pipe = src
            .async_io(Interest::READABLE, || {
                splice(src.as_fd(), None, &p.write, None, PIPE_SIZE, flags).map_err(io::Error::from)
            })
            .await?;
        if in_pipe == 0 {
            let _ = rustix::net::shutdown(dst, rustix::net::Shutdown::Write);
            return Ok(());
        }
        while in_pipe > 0 {
            let n = dst
                .async_io(Interest::WRITABLE, || {
                    splice(&p.read, None, dst.as_fd(), None, in_pipe, flags)
                        .map_err(io::Error::from)
                })
                .await?;
            in_pipe -= n;
        }
    }
}

/// Splices both ways until both directions reached end of file, or either failed.
pub async fn bidirectional(a: &TcpStream, b: &TcpStream) -> io::Result<()> {
    let up = one_way(a, b);
    let down = one_way(b, a);
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        tokio::select! {
            r = &mut up, if !up_done => { r?; up_done = true; }
            r = &mut down, if !down_done => { r?; down_done = true; }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn moves_bytes_both_ways_and_half_closes() {
        let l1 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(l1.local_addr().unwrap()).await.unwrap();
        let (proxy_in, _) = l1.accept().await.unwrap();
        let proxy_out = TcpStream::connect(l2.local_addr().unwrap()).await.unwrap();
        let (mut server, _) = l2.accept().await.unwrap();
        let relay = tokio::spawn(async move { bidirectional(&proxy_in, &proxy_out).await });
        let big: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let send = big.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&send).await.unwrap();
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, big, "client to server, byte-exact, then end of file");
        server.write_all(b"reply").await.unwrap();
        drop(server);
        assert_eq!(writer.await.unwrap(), b"reply");
        relay.await.unwrap().unwrap();
    }
}
