//! The blob stores against a real S3-compatible server (moto, over HTTP with SigV4) and the
//! local directory: objects, multipart uploads, listing by prefix, layer push/pull with
//! skip-what-exists and resume, corruption refused, an unreachable store reported as such.

mod common;

use std::sync::Arc;

use bothy_blob::archive::{pack, unpack, PackOptions};
use bothy_blob::transfer::{chunk_key, layer_key, pull_archive, push_archive};
use bothy_blob::{BlobError, BlobKey, BlobStore, StoreLocation};
use bothy_testkit::S3Server;
use bytes::Bytes;

fn open(server: &S3Server, url: &str) -> Arc<dyn BlobStore> {
    let env = server.env();
    StoreLocation::parse(url)
        .unwrap()
        .open_with_env(|k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        .unwrap()
}

fn key(s: &str) -> BlobKey {
    BlobKey::new(s).unwrap()
}

async fn objects_and_listing(store: &dyn BlobStore) {
    assert_eq!(store.head(&key("a/one")).await.unwrap(), None);
    assert!(matches!(
        store.get(&key("a/one")).await,
        Err(BlobError::NotFound(_))
    ));
    store
        .put_bytes(&key("a/one"), Bytes::from_static(b"1"))
        .await
        .unwrap();
    store
        .put_bytes(&key("a/b/two"), Bytes::from_static(b"22"))
        .await
        .unwrap();
    store
        .put_bytes(&key("ab"), Bytes::from_static(b"333"))
        .await
        .unwrap();
    assert_eq!(&store.get_bytes(&key("a/b/two")).await.unwrap()[..], b"22");
    assert_eq!(store.head(&key("ab")).await.unwrap().unwrap().size, 3);
    let mut listed: Vec<_> = store
        .list("a")
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.key.to_string(), m.size))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [("a/b/two".to_string(), 2), ("a/one".to_string(), 1)]
    );
    store.delete(&key("a/one")).await.unwrap();
    store.delete(&key("a/one")).await.unwrap();
    assert!(!store.exists(&key("a/one")).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_objects_multipart_and_prefixes() {
    let Some(server) = S3Server::start() else {
        return;
    };
    server.create_bucket("objs");
    let store = open(&server, &server.store_url("objs"));
    objects_and_listing(store.as_ref()).await;

    // A prefixed store sees only its own keys.
    let prefixed = open(
        &server,
        &format!("s3://objs/team/x?endpoint={}", server.endpoint),
    );
    prefixed
        .put_bytes(&key("a/p"), Bytes::from_static(b"p"))
        .await
        .unwrap();
    assert_eq!(prefixed.list("").await.unwrap().len(), 1);
    assert!(store.exists(&key("team/x/a/p")).await.unwrap());

    // A 40 MiB stream goes up as a multipart upload and comes back intact.
    let big: Vec<u8> = (0..40 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let parts: Vec<_> = big
        .chunks(1 << 20)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let n = store
        .put_stream(
            &key("big/object"),
            Box::pin(futures_util::stream::iter(parts)),
        )
        .await
        .unwrap();
    assert_eq!(n, big.len() as u64);
    let back = store.get_bytes(&key("big/object")).await.unwrap();
    assert!(back[..] == big[..], "multipart object differs");
    let log = server.log();
    assert!(
        log.contains("?uploads"),
        "no multipart upload in the server log:\n{log}"
    );
    assert!(log.contains("partNumber="), "no parts in the server log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_objects() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreLocation::parse(&dir.path().display().to_string())
        .unwrap()
        .open()
        .unwrap();
    objects_and_listing(store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_store_is_unavailable() {
    let Some(server) = S3Server::start() else {
        return;
    };
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = open(
        &server,
        &format!("s3://nobucket?endpoint=http://127.0.0.1:{port}"),
    );
    let t = std::time::Instant::now();
    let err = store.head(&key("x")).await.unwrap_err();
    assert!(matches!(err, BlobError::Unavailable(_)), "{err}");
    assert_eq!(
        bothy_api::ApiError::from(err).code,
        bothy_api::ErrorCode::BlobStoreUnavailable
    );
    assert!(t.elapsed().as_secs() < 40, "took {:?}", t.elapsed());
    // A bucket that does not exist on a live server.
    let store = open(&server, &server.store_url("no-such-bucket"));
    let err = store
        .put_bytes(&key("x"), Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::Unavailable(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_push_skips_resumes_and_pull_verifies() {
    if !bothy_testkit::require_root("layer archives (chown, mknod)") {
        return;
    }
    let Some(server) = S3Server::start() else {
        return;
    };
    server.create_bucket("layers");
    let store = open(&server, &server.store_url("layers"));
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    common::build_tree(&src, 5 * 1024 * 1024);
    let archive = t.path().join("layer.tar.zst");
    let packed = tokio::task::block_in_place(|| {
        pack(
            &src,
            &archive,
            &PackOptions {
                chunk_size: 1024 * 1024,
                ..Default::default()
            },
        )
    })
    .unwrap();
    let n_chunks = packed.chunks.len() as u64;
    assert!(n_chunks >= 5);

    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let progress: bothy_blob::transfer::ProgressFn = {
        let seen = seen.clone();
        Arc::new(move |p| seen.lock().unwrap().push(p))
    };
    let first = push_archive(store.as_ref(), &archive, &packed, Some(&progress))
        .await
        .unwrap();
    assert_eq!(first.chunks_uploaded, n_chunks);
    assert_eq!(first.uploaded_bytes, packed.size);
    let last = *seen.lock().unwrap().last().unwrap();
    assert_eq!((last.done, last.total), (packed.size, packed.size));

    // Again: the layer is complete, nothing moves.
    let second = push_archive(store.as_ref(), &archive, &packed, None)
        .await
        .unwrap();
    assert!(second.layer_skipped);
    assert_eq!(second.uploaded_bytes, 0);

    // An interrupted push (index never written, two chunks never sent) resumes: only the
    // missing chunks go up.
    store.delete(&layer_key(&packed.digest)).await.unwrap();
    store
        .delete(&chunk_key(&packed.chunks[1].digest))
        .await
        .unwrap();
    store
        .delete(&chunk_key(&packed.chunks[3].digest))
        .await
        .unwrap();
    let resumed = push_archive(store.as_ref(), &archive, &packed, None)
        .await
        .unwrap();
    assert_eq!(resumed.chunks_uploaded, 2);
    assert_eq!(resumed.chunks_skipped, n_chunks - 2);
    assert_eq!(
        resumed.uploaded_bytes,
        packed.chunks[1].size + packed.chunks[3].size
    );

    // Pull and unpack: identical tree.
    let pulled = t.path().join("pulled.tar.zst");
    pull_archive(store.as_ref(), &packed.digest, &pulled, None)
        .await
        .unwrap();
    let dest = t.path().join("dest");
    tokio::task::block_in_place(|| unpack(&pulled, &packed.digest, &dest)).unwrap();
    assert_eq!(common::describe(&src).len(), common::describe(&dest).len());
    assert_eq!(
        common::describe(&src).get("big.bin"),
        common::describe(&dest).get("big.bin")
    );

    // A chunk damaged in the store (one byte flipped): refused, no file left.
    let k = chunk_key(&packed.chunks[2].digest);
    let mut bad = store.get_bytes(&k).await.unwrap().to_vec();
    bad[1000] ^= 1;
    store.put_bytes(&k, Bytes::from(bad)).await.unwrap();
    std::fs::remove_file(&pulled).unwrap();
    let err = pull_archive(store.as_ref(), &packed.digest, &pulled, None)
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::Corrupt(_)), "{err}");
    assert!(!pulled.exists());
    // A missing chunk: also corrupt (the store lost part of a complete layer).
    store.delete(&k).await.unwrap();
    let err = pull_archive(store.as_ref(), &packed.digest, &pulled, None)
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::Corrupt(_)), "{err}");
    assert_eq!(
        bothy_api::ApiError::from(err).code,
        bothy_api::ErrorCode::CorruptBlob
    );
}
