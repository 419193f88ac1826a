//! Writing PAX extended headers (`x` entries) that carry xattrs and exact mtimes.

use std::io::{self, Write};

/// Encodes PAX records: each is `"<len> <key>=<value>\n"` where `<len>` counts the whole record,
/// its own digits included. Values are raw bytes (xattr values need not be text).
pub(crate) fn encode_records(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        // " " + key + "=" + value + "\n"
        let rest = 1 + key.len() + 1 + value.len() + 1;
        let mut len = rest + 1;
        while len.to_string().len() + rest != len {
            len = len.to_string().len() + rest;
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// Appends a PAX extended header holding `records`; it applies to the next entry.
pub(crate) fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    records: &[(String, Vec<u8>)],
) -> io::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let data = encode_records(records);
    let mut header = tar::Header::new_ustar();
    header.set_path("PaxHeader")?;
    header.set_entry_type(tar::EntryType::XHeader);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder.append(&header, data.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lengths_count_themselves() {
        let recs = vec![
            ("mtime".to_string(), b"1.5".to_vec()),
            ("k".to_string(), vec![b'x'; 93]),
        ];
        let out = encode_records(&recs);
        let parsed: Vec<_> = tar::PaxExtensions::new(&out)
            .map(|r| {
                let r = r.unwrap();
                (r.key().unwrap().to_string(), r.value_bytes().to_vec())
            })
            .collect();
        assert_eq!(parsed, recs);
    }
}
