//! Small persistent records: JSON files written atomically, and random ids.

use std::io::Write;
use std::path::Path;

use rand::Rng;

/// Writes `value` as JSON to `path` atomically (temp file, fsync-free rename): a reader sees
/// the old record or the new one, never half of one.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
    }
    std::fs::rename(&tmp, path)
}

/// Reads a JSON record; `None` when the file is missing or unreadable (a record written by a
/// newer or broken agent is skipped, not fatal).
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "skipping unreadable record");
            None
        }
    }
}

/// A random id of `len` lowercase letters and digits (a valid DNS label).
pub fn random_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_labels() {
        let id = random_id(12);
        assert_eq!(id.len(), 12);
        assert!(bothy_api::name::validate_label(&id).is_ok());
        assert_ne!(random_id(12), id);
    }

    #[test]
    fn json_round_trips_atomically() {
        let dir = std::env::temp_dir().join(format!("bothy-persist-{}", random_id(8)));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("r.json");
        write_json(&p, &vec![1, 2, 3]).unwrap();
        assert_eq!(read_json::<Vec<i32>>(&p), Some(vec![1, 2, 3]));
        assert!(!p.with_extension("json.tmp").exists());
        std::fs::write(&p, b"{broken").unwrap();
        assert_eq!(read_json::<Vec<i32>>(&p), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
