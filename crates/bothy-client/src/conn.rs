//! Connections to the daemon: unix socket or TCP.

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::{Body, ClientError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port`
    Tcp(String),
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        if let Some(p) = url.strip_prefix("unix:") {
            let p = p.trim_start_matches("//");
            if p.is_empty() {
                return Err(ClientError::Usage("unix: URL without a path".into()));
            }
            return Ok(Self::Unix(PathBuf::from(p)));
        }
        if let Some(rest) = url.strip_prefix("http://") {
            let authority = rest.trim_end_matches('/');
            if authority.is_empty() || authority.contains('/') {
                return Err(ClientError::Usage(format!(
                    "bad URL {url:?}: expected http://HOST:PORT"
                )));
            }
            return Ok(Self::Tcp(authority.to_string()));
        }
        Err(ClientError::Usage(format!(
            "bad daemon URL {url:?}: use unix:/path/to/bothy.sock or http://HOST:PORT"
        )))
    }

    pub fn host_header(&self) -> String {
        match self {
            Endpoint::Unix(_) => "localhost".to_string(),
            Endpoint::Tcp(a) => a.clone(),
        }
    }

    pub(crate) async fn connect_raw(&self) -> Result<AnyStream, ClientError> {
        match self {
            Endpoint::Unix(p) => UnixStream::connect(p)
                .await
                .map(AnyStream::Unix)
                .map_err(|e| ClientError::Connect {
                    endpoint: format!("unix:{}", p.display()),
                    source: e,
                }),
            Endpoint::Tcp(a) => {
                let s = TcpStream::connect(a)
                    .await
                    .map_err(|e| ClientError::Connect {
                        endpoint: format!("http://{a}"),
                        source: e,
                    })?;
                let _ = s.set_nodelay(true);
                Ok(AnyStream::Tcp(s))
            }
        }
    }

    pub(crate) async fn connect(&self) -> Result<SendRequest<Body>, ClientError> {
        let io = TokioIo::new(self.connect_raw().await?);
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(io)
            .await
            .map_err(ClientError::Http)?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }
}

/// A unix or TCP stream.
pub enum AnyStream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl AsyncRead for AnyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            AnyStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            AnyStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for AnyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            AnyStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            AnyStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            AnyStream::Unix(s) => Pin::new(s).poll_flush(cx),
            AnyStream::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            AnyStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            AnyStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            Endpoint::parse("unix:/a/b.sock").unwrap(),
            Endpoint::Unix("/a/b.sock".into())
        );
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:8080/").unwrap(),
            Endpoint::Tcp("127.0.0.1:8080".into())
        );
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("unix:").is_err());
    }
}
