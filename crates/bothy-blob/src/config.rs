//! Which blob store to use, from one string (the daemon's `--blob-store`, or an API request's
//! `store`) plus the environment for credentials.
//!
//! ```text
//! /var/lib/bothy/blobs                      a local directory
//! file:///var/lib/bothy/blobs               the same
//! s3://BUCKET[/PREFIX][?endpoint=URL&region=R&path_style=true|false]
//! ```
//!
//! S3 credentials never go in the string (it is logged and stored in records): they come from
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally `AWS_SESSION_TOKEN` in the
//! daemon's environment; without them requests go unsigned. The endpoint defaults to
//! `AWS_ENDPOINT_URL`, the region to `AWS_REGION` / `AWS_DEFAULT_REGION` / `us-east-1`.
//! Path-style addressing is the default when an endpoint is given (self-hosted servers),
//! virtual-hosted style otherwise.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{BlobError, Result};
use crate::local::LocalStore;
use crate::s3::{S3Config, S3Store};
use crate::store::BlobStore;

/// A parsed store location (without secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Local(PathBuf),
    S3 {
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
        region: Option<String>,
        path_style: Option<bool>,
    },
}

impl StoreLocation {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| BlobError::Invalid(format!("invalid blob store {s:?}: {why}"));
        if let Some(rest) = s.strip_prefix("s3://") {
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            let path = path.trim_end_matches('/');
            let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
            let bucket_ok = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !bucket_ok {
                return Err(bad("bucket names are 3-63 of [a-z0-9.-]"));
            }
            if !prefix.is_empty() {
                crate::store::BlobKey::new(prefix).map_err(|_| bad("bad key prefix"))?;
            }
            let (mut endpoint, mut region, mut path_style) = (None, None, None);
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let v = percent_encoding::percent_decode_str(v)
                    .decode_utf8()
                    .map_err(|_| bad("query is not utf-8"))?
                    .into_owned();
                match k {
                    "endpoint" => {
                        if !(v.starts_with("http://") || v.starts_with("https://")) {
                            return Err(bad("endpoint must be an http(s) URL"));
                        }
                        endpoint = Some(v.trim_end_matches('/').to_string());
                    }
                    "region" => region = Some(v),
                    "path_style" => {
                        path_style = Some(match v.as_str() {
                            "true" | "1" => true,
                            "false" | "0" => false,
                            _ => return Err(bad("path_style is true or false")),
                        })
                    }
                    "access_key_id" | "secret_access_key" | "session_token" => {
                        return Err(bad("credentials come from the environment, not the URL"))
                    }
                    other => return Err(bad(&format!("unknown parameter {other:?}"))),
                }
            }
            return Ok(Self::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                endpoint,
                region,
                path_style,
            });
        }
        let path = s.strip_prefix("file://").unwrap_or(s);
        if !path.starts_with('/') {
            return Err(bad("a local store is an absolute path (or s3://BUCKET…)"));
        }
        Ok(Self::Local(PathBuf::from(path)))
    }

    /// Opens the store, reading credentials and defaults through `env` (normally
    /// `|k| std::env::var(k).ok()`).
    pub fn open_with_env(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Arc<dyn BlobStore>> {
        match self {
            Self::Local(path) => Ok(Arc::new(LocalStore::new(path))),
            Self::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                path_style,
            } => {
                let nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
                let endpoint = endpoint.clone().or_else(|| nonempty("AWS_ENDPOINT_URL"));
                let region = region
                    .clone()
                    .or_else(|| nonempty("AWS_REGION"))
                    .or_else(|| nonempty("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|| "us-east-1".to_string());
                let config = S3Config {
                    bucket: bucket.clone(),
                    prefix: prefix.clone(),
                    path_style: path_style.unwrap_or(endpoint.is_some()),
                    endpoint,
                    region,
                    access_key_id: nonempty("AWS_ACCESS_KEY_ID"),
                    secret_access_key: nonempty("AWS_SECRET_ACCESS_KEY"),
                    session_token: nonempty("AWS_SESSION_TOKEN"),
                };
                Ok(Arc::new(S3Store::new(config)?))
            }
        }
    }

    /// Opens the store with the process environment.
    pub fn open(&self) -> Result<Arc<dyn BlobStore>> {
        self.open_with_env(|k| std::env::var(k).ok())
    }
}

/// Parses and opens a store string in one go.
pub fn open_store(s: &str) -> Result<Arc<dyn BlobStore>> {
    StoreLocation::parse(s)?.open()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        assert_eq!(
            StoreLocation::parse("/var/blobs").unwrap(),
            StoreLocation::Local("/var/blobs".into())
        );
        assert_eq!(
            StoreLocation::parse("file:///var/blobs").unwrap(),
            StoreLocation::Local("/var/blobs".into())
        );
        assert_eq!(
            StoreLocation::parse("s3://my-bucket/some/prefix?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=eu-1&path_style=false").unwrap(),
            StoreLocation::S3 {
                bucket: "my-bucket".into(),
                prefix: "some/prefix".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: Some("eu-1".into()),
                path_style: Some(false),
            }
        );
        for bad in [
            "relative/dir",
            "s3://",
            "s3://UPPER",
            "s3://b/../x",
            "s3://bucket?endpoint=ftp://x",
            "s3://bucket?secret_access_key=x",
            "s3://bucket?what=1",
        ] {
            assert!(StoreLocation::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn s3_defaults_from_env() {
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("id".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("secret".to_string()),
            _ => None,
        };
        let store = StoreLocation::parse("s3://bucket?endpoint=http://127.0.0.1:1")
            .unwrap()
            .open_with_env(env)
            .unwrap();
        let d = store.describe();
        assert_eq!(d, "s3://bucket?endpoint=http://127.0.0.1:1");
        assert!(!format!("{store:?}").contains("secret"));
        // One of the two credentials alone is refused.
        let half = |k: &str| (k == "AWS_ACCESS_KEY_ID").then(|| "id".to_string());
        assert!(StoreLocation::parse("s3://bucket")
            .unwrap()
            .open_with_env(half)
            .is_err());
    }
}
