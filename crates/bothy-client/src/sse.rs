//! Reading server-sent events.

use bytes::{Buf, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::ClientError;

/// One event: its name (`message` if none was given), its data, and its id if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event: String,
    pub data: String,
    pub id: Option<String>,
}

impl Event {
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_str(&self.data).map_err(|e| ClientError::Decode(e.to_string()))
    }
}

pub struct SseStream {
    body: Incoming,
    buf: BytesMut,
    done: bool,
}

impl SseStream {
    pub(crate) fn new(body: Incoming) -> Self {
        Self {
            body,
            buf: BytesMut::new(),
            done: false,
        }
    }

    /// The next event, or `None` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<Event>, ClientError> {
        loop {
            if let Some(ev) = self.parse_one() {
                return Ok(Some(ev));
            }
            if self.done {
                return Ok(None);
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(ClientError::Http(e)),
                None => self.done = true,
            }
        }
    }

    fn parse_one(&mut self) -> Option<Event> {
        loop {
            let end = find_blank_line(&self.buf)?;
            let block = self.buf.split_to(end.0);
            self.buf.advance(end.1);
            let text = String::from_utf8_lossy(&block);
            let mut ev = Event {
                event: "message".into(),
                data: String::new(),
                id: None,
            };
            let mut has_data = false;
            for line in text.lines() {
                if line.starts_with(':') {
                    continue;
                }
                let (k, v) = line.split_once(':').unwrap_or((line, ""));
                let v = v.strip_prefix(' ').unwrap_or(v);
                match k {
                    "event" => ev.event = v.to_string(),
                    "id" => ev.id = Some(v.to_string()),
                    "data" => {
                        if has_data {
                            ev.data.push('\n');
                        }
                        ev.data.push_str(v);
                        has_data = true;
                    }
                    _ => {}
                }
            }
            if has_data {
                return Some(ev);
            }
        }
    }
}

/// Position of the first blank line: (end of block, length of the separator).
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    for i in 0..buf.len() {
        if buf[i..].starts_with(b"\n\n") {
            return Some((i, 2));
        }
        if buf[i..].starts_with(b"\r\n\r\n") {
            return Some((i, 4));
        }
    }
    None
}
