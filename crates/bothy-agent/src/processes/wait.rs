//! Readiness waits: a log line, a port, the exit. Each has a timeout and fails at once with
//! `process_exited` when the process ends before the condition is met.

use std::sync::Arc;
use std::time::Duration;

use bothy_api::process::{
    ProcessInfo, ProcessStatus, StreamSel, WaitLogResult, WaitPortResult, DEFAULT_WAIT_MS,
};
use bothy_api::{Data, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::logs::Stream;
use super::manager::Proc;
use crate::error::AgentError;

/// Longest line a log wait keeps while looking for its end; longer lines are matched in
/// pieces of this size.
const MAX_LINE: usize = 1024 * 1024;

fn deadline(timeout_ms: Option<u64>) -> Instant {
    Instant::now() + Duration::from_millis(timeout_ms.unwrap_or(DEFAULT_WAIT_MS))
}

fn timed_out(what: &str, timeout_ms: Option<u64>) -> AgentError {
    AgentError::new(
        ErrorCode::Timeout,
        format!(
            "timed out after {} ms waiting for {what}",
            timeout_ms.unwrap_or(DEFAULT_WAIT_MS)
        ),
    )
}

fn exited(p: &Proc, what: &str) -> AgentError {
    let i = p.info();
    let how = match (i.status, i.exit_code, i.signal) {
        (ProcessStatus::Failed, _, _) => {
            format!("failed to start: {}", i.reason.unwrap_or_default())
        }
        (_, Some(c), _) => format!("{} with exit code {c}", i.status.as_str()),
        (_, _, Some(s)) => format!(
            "{} by {}",
            i.status.as_str(),
            super::manager::signal_name(s)
        ),
        _ => format!(
            "{}{}",
            i.status.as_str(),
            i.reason.map(|r| format!(" ({r})")).unwrap_or_default()
        ),
    };
    AgentError::new(
        ErrorCode::ProcessExited,
        format!("process {:?} ended before {what}: {how}", i.id),
    )
}

/// Waits for the process to end.
pub async fn exit(p: Arc<Proc>, timeout_ms: Option<u64>) -> Result<ProcessInfo, AgentError> {
    let mut changed = p.subscribe();
    let until = deadline(timeout_ms);
    loop {
        if p.status() != ProcessStatus::Running {
            return Ok(p.info());
        }
        if tokio::time::timeout_at(until, changed.changed())
            .await
            .is_err()
        {
            return Err(timed_out("the process to exit", timeout_ms));
        }
    }
}

struct LineBuf {
    buf: Vec<u8>,
}

impl LineBuf {
    /// Adds output; returns the first complete line that matches.
    fn feed(&mut self, data: &[u8], re: &regex::bytes::Regex) -> Option<(Vec<u8>, Vec<u8>)> {
        for piece in data.split_inclusive(|b| *b == b'\n') {
            self.buf.extend_from_slice(piece);
            let complete = self.buf.ends_with(b"\n");
            if complete || self.buf.len() >= MAX_LINE {
                let line = std::mem::take(&mut self.buf);
                let line = line.strip_suffix(b"\n").unwrap_or(&line).to_vec();
                if let Some(m) = check(&line, re) {
                    return Some(m);
                }
            }
        }
        None
    }
}

fn check(line: &[u8], re: &regex::bytes::Regex) -> Option<(Vec<u8>, Vec<u8>)> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    re.find(line)
        .map(|m| (line.to_vec(), m.as_bytes().to_vec()))
}

/// Waits for a line matching `pattern` in the output produced so far or to come. Lines are
/// matched when complete; the last, unterminated line is matched once the process ended.
pub async fn log(
    p: Arc<Proc>,
    pattern: &str,
    sel: StreamSel,
    timeout_ms: Option<u64>,
) -> Result<WaitLogResult, AgentError> {
    let re = regex::bytes::Regex::new(pattern)
        .map_err(|e| AgentError::invalid(format!("invalid pattern: {e}")))?;
    let until = deadline(timeout_ms);
    let mut ends = p.logs.subscribe();
    let mut changed = p.subscribe();
    let mut bufs = [LineBuf { buf: Vec::new() }, LineBuf { buf: Vec::new() }];
    let mut cursor = 0u64;
    loop {
        // Read the status before the output, so output produced before the end is seen.
        let ended = p.status() != ProcessStatus::Running;
        loop {
            let r = p
                .logs
                .read(cursor, 1024 * 1024)
                .map_err(|e| AgentError::internal(format!("read log: {e}")))?;
            if r.chunks.is_empty() {
                break;
            }
            for c in r.chunks {
                let (i, wanted) = match c.stream {
                    Stream::Stdout => (0, sel != StreamSel::Stderr),
                    Stream::Stderr => (1, sel != StreamSel::Stdout),
                };
                if !wanted {
                    continue;
                }
                if let Some((line, matched)) = bufs[i].feed(&c.data, &re) {
                    return Ok(WaitLogResult {
                        line: Data::encode(&line),
                        matched: Data::encode(&matched),
                        cursor: c.cursor,
                    });
                }
            }
            cursor = r.next;
        }
        if ended {
            for b in &bufs {
                if let Some((line, matched)) = check(&b.buf, &re) {
                    return Ok(WaitLogResult {
                        line: Data::encode(&line),
                        matched: Data::encode(&matched),
                        cursor,
                    });
                }
            }
            return Err(exited(&p, &format!("a line matched {pattern:?}")));
        }
        let woke = tokio::time::timeout_at(until, async {
            tokio::select! {
                _ = ends.changed() => {}
                _ = changed.changed() => {}
            }
        })
        .await;
        if woke.is_err() {
            return Err(timed_out(
                &format!("a line matching {pattern:?}"),
                timeout_ms,
            ));
        }
    }
}

/// What a port wait checks.
pub struct PortCheck {
    pub port: u16,
    /// `(path, min status, max status)` for an HTTP check.
    pub http: Option<(String, u16, u16)>,
    pub interval: Duration,
}

/// Waits until the port accepts connections (or answers HTTP with a status in range).
pub async fn port(
    p: Arc<Proc>,
    check: PortCheck,
    timeout_ms: Option<u64>,
) -> Result<WaitPortResult, AgentError> {
    if check.port == 0 {
        return Err(AgentError::invalid("port must be between 1 and 65535"));
    }
    if let Some((path, min, max)) = &check.http {
        if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(AgentError::invalid(
                "http.path must start with / and hold no spaces or control characters",
            ));
        }
        if min > max {
            return Err(AgentError::invalid(
                "http.status_min is above http.status_max",
            ));
        }
    }
    let until = deadline(timeout_ms);
    let mut changed = p.subscribe();
    let what = format!("port {}", check.port);
    loop {
        if p.status() != ProcessStatus::Running {
            return Err(exited(&p, &format!("{what} was ready")));
        }
        let attempt = tokio::time::timeout_at(until, probe(&check));
        match attempt.await {
            Err(_) => return Err(timed_out(&what, timeout_ms)),
            Ok(Some(status)) => {
                return Ok(WaitPortResult {
                    port: check.port,
                    status,
                })
            }
            Ok(None) => {}
        }
        let pause = tokio::time::timeout_at(until, async {
            tokio::select! {
                _ = tokio::time::sleep(check.interval) => {}
                _ = changed.changed() => {}
            }
        });
        if pause.await.is_err() {
            return Err(timed_out(&what, timeout_ms));
        }
    }
}

/// One attempt: `Some(status)` when ready (status only in HTTP mode).
async fn probe(check: &PortCheck) -> Option<Option<u16>> {
    let mut conn = None;
    for addr in [
        std::net::SocketAddr::from(([127, 0, 0, 1], check.port)),
        std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, check.port)),
    ] {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await
        {
            conn = Some(s);
            break;
        }
    }
    let mut s = conn?;
    let Some((path, min, max)) = &check.http else {
        return Some(None);
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\nUser-Agent: bothy-wait\r\nConnection: close\r\n\r\n",
        check.port
    );
    let status = tokio::time::timeout(Duration::from_secs(5), async {
        s.write_all(req.as_bytes()).await.ok()?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        parse_status(&head)
    })
    .await
    .ok()??;
    (status >= *min && status <= *max).then_some(Some(status))
}

/// The status code of an HTTP/1.x status line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status(b"HTTP/1.0 404 Not Found\r\n\r\n"), Some(404));
        assert_eq!(parse_status(b"SSH-2.0-x\r\n"), None);
    }

    #[test]
    fn lines_match_when_complete() {
        let re = regex::bytes::Regex::new(r"port (\d+)$").unwrap();
        let mut b = LineBuf { buf: Vec::new() };
        assert_eq!(b.feed(b"listening on port 80", &re), None);
        let (line, m) = b.feed(b"00\r\nmore", &re).unwrap();
        assert_eq!(line, b"listening on port 8000");
        assert_eq!(m, b"port 8000");
    }
}
