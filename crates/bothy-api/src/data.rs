//! Byte-exact payloads in JSON: UTF-8 text as a string, anything else as base64.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// How a [`Data`] payload is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    Base64,
}

/// A chunk of bytes as it appears in JSON: `{"data": "...", "encoding": "utf-8"|"base64"}`.
/// Decoding always gives back the exact bytes that were encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data {
    pub data: String,
    #[serde(default)]
    pub encoding: Encoding,
}

impl Data {
    pub fn encode(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) => Self {
                data: s.to_owned(),
                encoding: Encoding::Utf8,
            },
            Err(_) => Self {
                data: base64::engine::general_purpose::STANDARD.encode(bytes),
                encoding: Encoding::Base64,
            },
        }
    }

    pub fn decode(&self) -> Result<Vec<u8>, base64::DecodeError> {
        match self.encoding {
            Encoding::Utf8 => Ok(self.data.as_bytes().to_vec()),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD.decode(&self.data),
        }
    }
}

/// Splits `buf` so that the first part holds only whole UTF-8 sequences and the second part is
/// an incomplete sequence at the end (at most 3 bytes) that the next chunk may complete. Streams
/// use this so that a multi-byte character split across reads is not sent as base64.
pub fn split_incomplete_utf8(buf: &[u8]) -> usize {
    let n = buf.len();
    // Look back at most 3 bytes for the lead byte of a sequence that runs past the end.
    for back in 1..=3.min(n) {
        let b = buf[n - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // continuation byte
        }
        let need = if b & 0b1110_0000 == 0b1100_0000 {
            2
        } else if b & 0b1111_0000 == 0b1110_0000 {
            3
        } else if b & 0b1111_1000 == 0b1111_0000 {
            4
        } else {
            1
        };
        return if need > back { n - back } else { n };
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_text_and_binary() {
        for bytes in [
            &b"hello\n"[..],
            &[0xff, 0x00, 0x41],
            b"",
            "héllo".as_bytes(),
        ] {
            let d = Data::encode(bytes);
            assert_eq!(d.decode().unwrap(), bytes);
        }
        assert_eq!(Data::encode(b"a\n").encoding, Encoding::Utf8);
        assert_eq!(Data::encode(&[0xff]).encoding, Encoding::Base64);
    }

    #[test]
    fn keeps_back_split_characters() {
        let e = "é".as_bytes(); // 2 bytes
        assert_eq!(split_incomplete_utf8(&[b'a', e[0]]), 1);
        assert_eq!(split_incomplete_utf8(&[b'a', e[0], e[1]]), 3);
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(split_incomplete_utf8(&euro[..2]), 0);
        assert_eq!(split_incomplete_utf8(b"plain"), 5);
        assert_eq!(split_incomplete_utf8(&[0xff]), 1);
    }
}
