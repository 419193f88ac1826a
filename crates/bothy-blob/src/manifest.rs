//! Manifests: checksummed JSON documents in the store, named by the SHA-256 of their bytes.
//!
//! A manifest is written once under `manifests/<sha256>.json`; whoever holds its digest can
//! fetch it and check that the bytes hash to it, so a manifest cannot be altered or truncated
//! unnoticed, and it pins every layer it names by digest in turn. Named refs
//! (`refs/<kind>/<name>`) point at the latest manifest for a name; they are conveniences, the
//! digest is what gets verified.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{BlobError, Result};
use crate::store::{BlobKey, BlobStore};

/// Format tag of snapshot manifests.
pub const SNAPSHOT_FORMAT: &str = "bothy.snapshot/v1";

/// What an exported snapshot is: its layers in order (bottom first) on top of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// Always [`SNAPSHOT_FORMAT`].
    pub format: String,
    pub snapshot: SnapshotInfo,
    pub image: ImageRef,
    /// The snapshot's own layers, bottom first (not the image's).
    pub layers: Vec<LayerRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Id on the exporting machine.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Creation time on the exporting machine (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_ms: Option<i64>,
    /// The sandbox it was taken of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Bytes of file content in the snapshot's layers.
    #[serde(default)]
    pub size: u64,
}

/// The image a snapshot sits on. A machine-local image (`host`, a view of the host's own
/// `/usr`) is not exported: the importer uses its own image of that name. Other images travel
/// as layers like the snapshot's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    pub name: String,
    #[serde(default)]
    pub machine_local: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerRef>,
}

/// One layer archive in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// SHA-256 of the compressed archive.
    pub digest: Digest,
    /// Bytes of the compressed archive.
    pub size: u64,
    /// Bytes of file content once unpacked.
    #[serde(default)]
    pub content_bytes: u64,
    /// Free-form attributes the daemon needs to put the layer back (e.g. `mount`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

pub fn manifest_key(digest: &Digest) -> BlobKey {
    BlobKey::new(format!("manifests/{}.json", digest.hex())).expect("hex digests are valid keys")
}

fn ref_key(kind: &str, name: &str) -> Result<BlobKey> {
    if kind.contains('/') || name.contains('/') {
        return Err(BlobError::Invalid(format!("invalid ref {kind}/{name}")));
    }
    BlobKey::new(format!("refs/{kind}/{name}"))
}

/// Stores `doc` as a manifest; returns its digest.
pub async fn put_manifest<T: Serialize + Sync>(store: &dyn BlobStore, doc: &T) -> Result<Digest> {
    let bytes = serde_json::to_vec_pretty(doc)
        .map_err(|e| BlobError::Invalid(format!("encode manifest: {e}")))?;
    let digest = Digest::of(&bytes);
    let key = manifest_key(&digest);
    if store.head(&key).await?.map(|m| m.size) != Some(bytes.len() as u64) {
        store.put_bytes(&key, Bytes::from(bytes)).await?;
    }
    Ok(digest)
}

/// Checks `bytes` against `expected` and parses them.
pub fn verify_manifest<T: DeserializeOwned>(bytes: &[u8], expected: &Digest) -> Result<T> {
    let actual = Digest::of(bytes);
    if actual != *expected {
        return Err(BlobError::Corrupt(format!(
            "manifest {expected} does not match its checksum (got {actual})"
        )));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| BlobError::Corrupt(format!("manifest {expected} is not valid: {e}")))
}

/// Fetches and verifies a manifest.
pub async fn get_manifest<T: DeserializeOwned>(
    store: &dyn BlobStore,
    digest: &Digest,
) -> Result<T> {
    let bytes = match store.get_bytes(&manifest_key(digest)).await {
        Err(BlobError::NotFound(_)) => {
            return Err(BlobError::NotFound(format!(
                "manifest {digest} is not in {}",
                store.describe()
            )))
        }
        other => other?,
    };
    verify_manifest(&bytes, digest)
}

/// Fetches and verifies a snapshot manifest (checks its format tag).
pub async fn get_snapshot_manifest(
    store: &dyn BlobStore,
    digest: &Digest,
) -> Result<SnapshotManifest> {
    let m: SnapshotManifest = get_manifest(store, digest).await?;
    if m.format != SNAPSHOT_FORMAT {
        return Err(BlobError::Corrupt(format!(
            "manifest {digest} has format {:?}, expected {SNAPSHOT_FORMAT}",
            m.format
        )));
    }
    Ok(m)
}

/// Points `refs/<kind>/<name>` at a manifest digest.
pub async fn put_ref(store: &dyn BlobStore, kind: &str, name: &str, digest: &Digest) -> Result<()> {
    store
        .put_bytes(&ref_key(kind, name)?, Bytes::from(digest.to_string()))
        .await
}

/// The manifest digest `refs/<kind>/<name>` points at, if any.
pub async fn get_ref(store: &dyn BlobStore, kind: &str, name: &str) -> Result<Option<Digest>> {
    match store.get_bytes(&ref_key(kind, name)?).await {
        Ok(b) => {
            let s = std::str::from_utf8(&b)
                .map_err(|_| BlobError::corrupt(format!("ref {kind}/{name} is not text")))?;
            Ok(Some(Digest::parse(s.trim()).map_err(|_| {
                BlobError::corrupt(format!("ref {kind}/{name} does not hold a digest"))
            })?))
        }
        Err(BlobError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalStore;

    fn sample() -> SnapshotManifest {
        SnapshotManifest {
            format: SNAPSHOT_FORMAT.into(),
            snapshot: SnapshotInfo {
                id: "s1".into(),
                name: Some("base".into()),
                created_at_ms: None,
                sandbox: None,
                parent: None,
                size: 10,
            },
            image: ImageRef {
                name: "host".into(),
                machine_local: true,
                layers: vec![],
            },
            layers: vec![LayerRef {
                digest: Digest::of(b"x"),
                size: 1,
                content_bytes: 0,
                labels: BTreeMap::from([("mount".into(), "/".into())]),
            }],
        }
    }

    #[tokio::test]
    async fn round_trip_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let m = sample();
        let d = put_manifest(&store, &m).await.unwrap();
        assert_eq!(get_snapshot_manifest(&store, &d).await.unwrap(), m);
        put_ref(&store, "snapshots", "s1", &d).await.unwrap();
        assert_eq!(get_ref(&store, "snapshots", "s1").await.unwrap(), Some(d));
        assert_eq!(get_ref(&store, "snapshots", "nope").await.unwrap(), None);
        // Flip one byte: refused as corrupt.
        let path = dir.path().join(manifest_key(&d).as_str());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = get_snapshot_manifest(&store, &d).await.unwrap_err();
        assert!(matches!(err, BlobError::Corrupt(_)), "{err}");
        // Missing: not found.
        let err = get_snapshot_manifest(&store, &Digest::of(b"none"))
            .await
            .unwrap_err();
        assert!(matches!(err, BlobError::NotFound(_)), "{err}");
    }
}
