//! The DNS stub that answers sandboxes' queries (UDP and TCP, on the port the firewall
//! redirects every sandbox packet to port 53 to).
//!
//! A small hand-written codec: one question per query, A/AAAA answers, no compression except
//! the pointer to the question in answers. What is answered is decided by
//! [`super::Network::resolve`]: the sandbox is identified by its source address.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::Network;

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_PTR: u16 = 12;
const CLASS_IN: u16 = 1;

pub const RCODE_OK: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;

/// TTL of answers: synthetic addresses are stable for as long as the daemon runs.
const TTL_SECS: u32 = 300;

/// The question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// Header flags of the query (RD is echoed).
    pub flags: u16,
    /// Lower-case, without the trailing dot.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// The raw question (name, type, class), echoed in the answer.
    question: Vec<u8>,
}

/// What to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// NOERROR with these A records (none: the name exists but has no record of that type).
    Records(Vec<Ipv4Addr>),
    Rcode(u8),
}

#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Too short to hold even a header: drop it.
    Garbage,
    /// A header, but no usable question: answer FORMERR with this id.
    Format(u16),
    /// Not a standard query: answer NOTIMP.
    NotImplemented(u16),
}

pub fn parse(msg: &[u8]) -> Result<Query, ParseError> {
    if msg.len() < 12 {
        return Err(ParseError::Garbage);
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    let flags = u16::from_be_bytes([msg[2], msg[3]]);
    if flags & 0x8000 != 0 {
        return Err(ParseError::Garbage); // a response, not a query
    }
    if (flags >> 11) & 0xf != 0 {
        return Err(ParseError::NotImplemented(id));
    }
    let qdcount = u16::from_be_bytes([msg[4], msg[5]]);
    if qdcount != 1 {
        return Err(ParseError::Format(id));
    }
    let mut i = 12;
    let mut name = String::new();
    loop {
        let Some(&len) = msg.get(i) else {
            return Err(ParseError::Format(id));
        };
        i += 1;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 || i + len as usize > msg.len() || name.len() + len as usize > 253 {
            return Err(ParseError::Format(id));
        }
        if !name.is_empty() {
            name.push('.');
        }
        for &b in &msg[i..i + len as usize] {
            // Host names only: letters, digits, '-', '_' (SRV-style labels).
            if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(ParseError::Format(id));
            }
            name.push(b.to_ascii_lowercase() as char);
        }
        i += len as usize;
    }
    if i + 4 > msg.len() {
        return Err(ParseError::Format(id));
    }
    let qtype = u16::from_be_bytes([msg[i], msg[i + 1]]);
    let qclass = u16::from_be_bytes([msg[i + 2], msg[i + 3]]);
    Ok(Query {
        id,
        flags,
        name,
        qtype,
        qclass,
        question: msg[12..i + 4].to_vec(),
    })
}

/// Encodes the reply to `q`.
pub fn encode(q: &Query, answer: &Answer) -> Vec<u8> {
    let (rcode, records): (u8, &[Ipv4Addr]) = match answer {
        Answer::Records(r) => (RCODE_OK, r),
        Answer::Rcode(c) => (*c, &[]),
    };
    // QR, opcode 0, RD echoed, RA set.
    let flags: u16 = 0x8000 | (q.flags & 0x0100) | 0x0080 | rcode as u16;
    let mut out = Vec::with_capacity(12 + q.question.len() + records.len() * 16);
    out.extend_from_slice(&q.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&q.question);
    for ip in records {
        out.extend_from_slice(&0xc00cu16.to_be_bytes()); // the question's name
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL_SECS.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    out
}

/// A reply with only a header (for queries that did not parse).
fn header_only(id: u16, rcode: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(0x8080u16 | rcode as u16).to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    out
}

/// The reply to the raw query `msg` from `peer`, or `None` to stay silent.
pub async fn answer(net: &Network, peer: SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
    match parse(msg) {
        Ok(q) => {
            let a = if q.qclass != CLASS_IN {
                Answer::Rcode(RCODE_NOTIMP)
            } else {
                net.resolve(peer.ip(), &q.name, q.qtype).await
            };
            Some(encode(&q, &a))
        }
        Err(ParseError::Garbage) => None,
        Err(ParseError::Format(id)) => Some(header_only(id, RCODE_FORMERR)),
        Err(ParseError::NotImplemented(id)) => Some(header_only(id, RCODE_NOTIMP)),
    }
}

/// Serves UDP queries until `stop`.
pub async fn serve_udp(sock: UdpSocket, net: Arc<Network>, stop: CancellationToken) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let msg = buf[..n].to_vec();
        let (sock, net) = (sock.clone(), net.clone());
        tokio::spawn(async move {
            if let Some(reply) = answer(&net, peer, &msg).await {
                let _ = sock.send_to(&reply, peer).await;
            }
        });
    }
}

/// Serves DNS over TCP (length-prefixed messages) until `stop`.
pub async fn serve_tcp(l: TcpListener, net: Arc<Network>, stop: CancellationToken) {
    loop {
        let (mut s, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = l.accept() => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let net = net.clone();
        tokio::spawn(async move {
            // A few queries per connection, each within a deadline: a silent client costs one
            // idle task for at most that long.
            for _ in 0..16 {
                let r = tokio::time::timeout(Duration::from_secs(10), async {
                    let len = s.read_u16().await? as usize;
                    let mut msg = vec![0u8; len];
                    s.read_exact(&mut msg).await?;
                    std::io::Result::Ok(msg)
                })
                .await;
                let Ok(Ok(msg)) = r else { return };
                let Some(reply) = answer(&net, peer, &msg).await else {
                    return;
                };
                let mut out = (reply.len() as u16).to_be_bytes().to_vec();
                out.extend_from_slice(&reply);
                if s.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m
    }

    #[test]
    fn parses_and_answers() {
        let q = parse(&query("Api.Example.test", TYPE_A)).unwrap();
        assert_eq!(q.name, "api.example.test");
        assert_eq!(q.qtype, TYPE_A);
        let r = encode(&q, &Answer::Records(vec![Ipv4Addr::new(198, 18, 0, 1)]));
        assert_eq!(&r[0..2], &[0x12, 0x34]);
        assert_eq!(r[2] & 0x80, 0x80); // QR
        assert_eq!(r[3] & 0x0f, 0); // NOERROR
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1); // one answer
        assert_eq!(&r[r.len() - 4..], &[198, 18, 0, 1]);
        let nx = encode(&q, &Answer::Rcode(RCODE_NXDOMAIN));
        assert_eq!(nx[3] & 0x0f, RCODE_NXDOMAIN);
        assert_eq!(u16::from_be_bytes([nx[6], nx[7]]), 0);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse(&[1, 2, 3]), Err(ParseError::Garbage));
        let mut m = query("a.test", TYPE_A);
        m.truncate(m.len() - 2);
        assert_eq!(parse(&m), Err(ParseError::Format(0x1234)));
        let mut c = query("a.test", TYPE_A);
        c[12] = 0xc0; // compression pointer in a question
        assert_eq!(parse(&c), Err(ParseError::Format(0x1234)));
        let mut two = query("a.test", TYPE_A);
        two[5] = 2;
        assert_eq!(parse(&two), Err(ParseError::Format(0x1234)));
        let mut bad = query("a b.test", TYPE_A);
        bad[2] = 0x01;
        assert_eq!(parse(&bad), Err(ParseError::Format(0x1234)));
    }
}
