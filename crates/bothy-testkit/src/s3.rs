//! A real S3-compatible server for tests: moto's standalone server (`moto_server`, installed by
//! `.ci/install-deps.d/s3.sh`), started on a free loopback port and killed on drop. It speaks
//! S3 over HTTP (SigV4-signed requests, multipart uploads) and keeps objects in memory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Access key and secret the tests sign with (moto accepts any).
pub const ACCESS_KEY_ID: &str = "bothy-test-key";
pub const SECRET_ACCESS_KEY: &str = "bothy-test-secret";

pub struct S3Server {
    child: Child,
    pub port: u16,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    log: tempfile::NamedTempFile,
}

impl S3Server {
    /// Starts the server, or returns `None` (after [`crate::skip`]) when it is not installed.
    pub fn start() -> Option<Self> {
        let Some(bin) = find_moto() else {
            crate::skip("moto_server (S3-compatible test server) is not installed: see .ci/install-deps.d/s3.sh");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log"))
            .stderr(log.reopen().expect("log"))
            .spawn()
            .expect("spawn moto_server");
        let mut server = Self {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.request("GET", "/").is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("moto_server exited ({status}):\n{}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not come up in 30 s:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(server)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, bucket: &str) {
        let status = self
            .request("PUT", &format!("/{bucket}"))
            .expect("create bucket");
        assert!(status < 300, "create bucket {bucket}: HTTP {status}");
    }

    /// The store string for a bucket on this server (`s3://BUCKET?endpoint=…`).
    pub fn store_url(&self, bucket: &str) -> String {
        format!("s3://{bucket}?endpoint={}", self.endpoint)
    }

    /// The environment a process needs to sign requests to this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_ACCESS_KEY.into()),
        ]
    }

    /// One unsigned HTTP/1.1 request; returns the status code.
    fn request(&self, method: &str, path: &str) -> std::io::Result<u16> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        let head = String::from_utf8_lossy(&buf);
        head.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other("bad HTTP response"))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_moto() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("moto_server"))
        .find(|p| p.is_file())
}
