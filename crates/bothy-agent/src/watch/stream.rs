//! The SSE form of a watch: `ready`, then events as the log grows, batched per write.

use std::time::Duration;

use axum::response::Response;
use bothy_api::watch::WatchEvent;
use bytes::{Bytes, BytesMut};

use super::log::Reader;

/// Events per chunk written to the client.
const BATCH: usize = 4_096;
/// A comment line this often keeps proxies from timing the stream out and notices a client
/// that went away.
const KEEPALIVE: Duration = Duration::from_secs(15);

struct Sse {
    reader: Reader,
    rx: tokio::sync::watch::Receiver<u64>,
    first: Option<Vec<WatchEvent>>,
}

fn encode(events: &[WatchEvent]) -> Bytes {
    let mut out = BytesMut::new();
    for e in events {
        out.extend_from_slice(&crate::sse::event_with_id(e.kind.as_str(), &e.cursor, e));
    }
    out.freeze()
}

pub fn sse(reader: Reader, first: Vec<WatchEvent>) -> Response {
    let rx = reader.watch.subscribe();
    let state = Sse {
        reader,
        rx,
        first: Some(first),
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if let Some(first) = st.first.take() {
            return Some((Ok::<_, std::io::Error>(encode(&first)), st));
        }
        loop {
            if st.reader.done {
                return None;
            }
            st.rx.borrow_and_update();
            let events = st.reader.read(BATCH);
            if !events.is_empty() {
                return Some((Ok(encode(&events)), st));
            }
            tokio::select! {
                changed = st.rx.changed() => {
                    if changed.is_err() {
                        return None; // the hub is gone
                    }
                }
                _ = tokio::time::sleep(KEEPALIVE) => {
                    return Some((Ok(Bytes::from_static(b": keepalive\n\n")), st));
                }
            }
        }
    });
    crate::sse::response(stream)
}
