//! Layer archives: exact round trips (owners, modes, whiteouts, xattrs, hardlinks, mtimes),
//! and refusal of corrupted, truncated, mismatched and escaping archives with nothing left
//! behind. Needs root (chown, mknod, trusted.* xattrs).

mod common;

use std::io::Write;
use std::path::Path;

use bothy_blob::archive::{pack, unpack, PackOptions};
use bothy_blob::{BlobError, Digest};

fn root() -> bool {
    bothy_testkit::require_root("layer archive tests (chown, mknod, trusted xattrs)")
}

fn assert_nothing_left(parent: &Path) {
    let left: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "archive.tar.zst" && n != "src")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn round_trip_is_exact_and_deterministic() {
    if !root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    common::build_tree(&src, 3 * 1024 * 1024 + 17);
    let archive = t.path().join("archive.tar.zst");
    let opts = PackOptions {
        chunk_size: 1024 * 1024,
        ..Default::default()
    };
    let packed = pack(&src, &archive, &opts).unwrap();
    assert_eq!(packed.size, std::fs::metadata(&archive).unwrap().len());
    assert_eq!(packed.digest, Digest::of(&std::fs::read(&archive).unwrap()));
    assert_eq!(
        packed.chunks.iter().map(|c| c.size).sum::<u64>(),
        packed.size
    );
    // Random content does not compress: several chunks.
    assert!(packed.chunks.len() >= 3, "{} chunks", packed.chunks.len());

    let dest = t.path().join("dest");
    let u = unpack(&archive, &packed.digest, &dest).unwrap();
    assert_eq!(u.entries, packed.entries);
    let (a, b) = (common::describe(&src), common::describe(&dest));
    for (k, v) in &a {
        assert_eq!(Some(v), b.get(k), "entry {k}");
    }
    assert_eq!(a.len(), b.len());
    // The hardlink stayed a hardlink.
    assert!(
        b["home/big-link"].contains("inode-of=big.bin"),
        "{}",
        b["home/big-link"]
    );
    assert!(
        b["big.bin"].contains("inode-of=big.bin"),
        "{}",
        b["big.bin"]
    );

    // Same tree, same bytes.
    let again = t.path().join("again.tar.zst");
    assert_eq!(pack(&src, &again, &opts).unwrap().digest, packed.digest);
    std::fs::remove_file(&again).unwrap();
    std::fs::remove_dir_all(&dest).unwrap();
    assert_nothing_left(t.path());
}

#[test]
fn filter_skips_entries_and_subtrees() {
    if !root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    common::build_tree(&src, 1000);
    let archive = t.path().join("archive.tar.zst");
    let filter =
        |p: &Path, is_dir: bool| !(p == Path::new("etc") && is_dir) && p != Path::new("big.bin");
    let packed = pack(
        &src,
        &archive,
        &PackOptions {
            filter: Some(&filter),
            ..Default::default()
        },
    )
    .unwrap();
    let dest = t.path().join("dest");
    unpack(&archive, &packed.digest, &dest).unwrap();
    assert!(!dest.join("etc").exists());
    assert!(!dest.join("big.bin").exists());
    // The second link of big.bin is now the first one written: a plain file.
    assert_eq!(
        std::fs::read(dest.join("home/big-link")).unwrap().len(),
        1000
    );
}

fn packed_sample(t: &Path) -> (std::path::PathBuf, Digest) {
    let src = t.join("src");
    common::build_tree(&src, 200_000);
    let archive = t.join("archive.tar.zst");
    let packed = pack(&src, &archive, &PackOptions::default()).unwrap();
    (archive, packed.digest)
}

fn assert_corrupt(r: Result<bothy_blob::archive::Unpacked, BlobError>, dest: &Path) {
    match r {
        Err(BlobError::Corrupt(msg)) => eprintln!("refused: {msg}"),
        other => panic!("expected corrupt, got {other:?}"),
    }
    assert!(!dest.exists(), "destination appeared");
}

#[test]
fn corrupted_archive_is_refused_and_nothing_appears() {
    if !root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (archive, digest) = packed_sample(t.path());
    let good = std::fs::read(&archive).unwrap();
    let dest = t.path().join("dest");
    // A flipped byte anywhere: early, middle, last.
    for at in [100, good.len() / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        std::fs::write(&archive, &bad).unwrap();
        assert_corrupt(unpack(&archive, &digest, &dest), &dest);
        assert_nothing_left(t.path());
    }
    // Truncated.
    for len in [0, 10, good.len() / 3, good.len() - 1] {
        std::fs::write(&archive, &good[..len]).unwrap();
        assert_corrupt(unpack(&archive, &digest, &dest), &dest);
        assert_nothing_left(t.path());
    }
    // Trailing garbage.
    let mut longer = good.clone();
    longer.extend_from_slice(b"junk");
    std::fs::write(&archive, &longer).unwrap();
    assert_corrupt(unpack(&archive, &digest, &dest), &dest);
    // A valid archive that is not the one asked for.
    std::fs::write(&archive, &good).unwrap();
    assert_corrupt(unpack(&archive, &Digest::of(b"other"), &dest), &dest);
    assert_nothing_left(t.path());
    // And the good one still unpacks.
    unpack(&archive, &digest, &dest).unwrap();
}

/// Builds a zstd-compressed tar from raw (name, type, link, data) entries, bypassing the tar
/// crate's own path checks, as an attacker would.
/// (name, type, link target, data) of a raw tar entry.
type RawEntry<'a> = (&'a str, tar::EntryType, &'a str, &'a [u8]);

fn evil_archive(path: &Path, entries: &[RawEntry<'_>]) -> Digest {
    let mut out = Vec::new();
    {
        let enc = zstd::Encoder::new(&mut out, 3).unwrap().auto_finish();
        let mut b = tar::Builder::new(enc);
        for (name, kind, link, data) in entries {
            let mut h = tar::Header::new_gnu();
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            if !link.is_empty() {
                h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_entry_type(*kind);
            h.set_mode(0o755);
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap().flush().unwrap();
    }
    std::fs::write(path, &out).unwrap();
    Digest::of(&out)
}

#[test]
fn escaping_entries_are_refused() {
    if !root() {
        return;
    }
    use tar::EntryType::*;
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let outside_s = outside.to_string_lossy().into_owned();
    let archive = t.path().join("archive.tar.zst");
    let dest = t.path().join("dest");
    let cases: Vec<(&str, Vec<RawEntry<'_>>)> = vec![
        (
            "dotdot",
            vec![(".", Directory, "", b""), ("../evil", Regular, "", b"x")],
        ),
        (
            "nested dotdot",
            vec![
                (".", Directory, "", b""),
                ("a/../../evil", Regular, "", b"x"),
            ],
        ),
        (
            "absolute",
            vec![
                (".", Directory, "", b""),
                ("/tmp/evil-abs", Regular, "", b"x"),
            ],
        ),
        (
            "through a symlink",
            vec![
                (".", Directory, "", b""),
                ("link", Symlink, &outside_s, b""),
                ("link/evil", Regular, "", b"x"),
            ],
        ),
        (
            "hardlink outside",
            vec![
                (".", Directory, "", b""),
                ("h", Link, "../outside/secret", b""),
            ],
        ),
        (
            "hardlink to a symlink",
            vec![
                (".", Directory, "", b""),
                ("s", Symlink, "/etc/shadow", b""),
                ("h", Link, "s", b""),
            ],
        ),
        (
            "no parent dir",
            vec![(".", Directory, "", b""), ("a/b", Regular, "", b"x")],
        ),
        (
            "duplicate",
            vec![
                (".", Directory, "", b""),
                ("f", Regular, "", b"x"),
                ("f", Symlink, "/", b""),
            ],
        ),
        ("no root", vec![("f", Regular, "", b"x")]),
    ];
    std::fs::write(outside.join("secret"), b"s").unwrap();
    for (what, entries) in cases {
        let d = evil_archive(&archive, &entries);
        match unpack(&archive, &d, &dest) {
            Err(BlobError::Corrupt(msg)) => eprintln!("{what}: refused: {msg}"),
            other => panic!("{what}: expected refusal, got {other:?}"),
        }
        assert!(!dest.exists(), "{what}: destination appeared");
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            1,
            "{what}: wrote outside"
        );
        assert!(!Path::new("/tmp/evil-abs").exists());
        assert!(!t.path().join("evil").exists());
    }
}
