//! Shared helpers of the bothy-blob integration tests: a tree with every kind of entry, and
//! an exact description of a tree to compare round trips with.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt};
use std::path::Path;

/// Builds a layer-like tree: dirs with odd modes and owners, an opaque dir, a whiteout, a
/// setuid file, hardlinks, symlinks (absolute, dangling), a FIFO, xattrs and exact mtimes, and
/// `big_bytes` of pseudo-random content in `big.bin`.
pub fn build_tree(root: &Path, big_bytes: usize) {
    std::fs::create_dir_all(root.join("etc/conf.d")).unwrap();
    std::fs::create_dir_all(root.join("opaque/inner")).unwrap();
    std::fs::create_dir_all(root.join("home/user")).unwrap();
    std::fs::write(root.join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
    std::fs::write(root.join("etc/conf.d/empty"), b"").unwrap();
    std::fs::write(root.join("opaque/inner/f"), b"in opaque").unwrap();
    std::fs::write(root.join("home/user/setuid"), b"#!/bin/sh\n").unwrap();
    chmod(&root.join("home/user/setuid"), 0o4755);
    chown(&root.join("home/user"), 1000, 1000);
    chown(&root.join("home/user/setuid"), 0, 1000);
    chmod(&root.join("home/user"), 0o750);
    chown(&root.join("etc/hosts"), 1_000_123, 1_000_456);
    let mut big = Vec::with_capacity(big_bytes);
    let mut x: u64 = 0x9e3779b97f4a7c15;
    while big.len() < big_bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.extend_from_slice(&x.to_le_bytes());
    }
    big.truncate(big_bytes);
    std::fs::write(root.join("big.bin"), &big).unwrap();
    std::fs::hard_link(root.join("big.bin"), root.join("home/big-link")).unwrap();
    symlink("/etc/hosts", root.join("abs-link")).unwrap();
    symlink("../nowhere/at/all", root.join("etc/dangling")).unwrap();
    // Overlay whiteout: a 0/0 char device; opaque dir marker: trusted.overlay.opaque=y.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("etc/deleted"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o000),
        rustix::fs::makedev(0, 0),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    setx(&root.join("opaque"), "trusted.overlay.opaque", b"y");
    setx(&root.join("etc/hosts"), "user.note", b"bin\x00ary\xff");
    setx(
        &root.join("etc/hosts"),
        "trusted.overlay.redirect",
        b"/old/hosts",
    );
    setx(
        &root.join("abs-link"),
        "trusted.overlay.origin",
        b"\x00\x01\x02",
    );
    // Exact mtimes (nanoseconds), files and directories.
    for (p, secs, nsec) in [
        ("etc/hosts", 1_600_000_000, 123_456_789),
        ("etc", 1_500_000_000, 1),
        ("abs-link", 1_400_000_000, 999_999_999),
    ] {
        rustix::fs::utimensat(
            rustix::fs::CWD,
            root.join(p),
            &rustix::fs::Timestamps {
                last_access: rustix::fs::Timespec {
                    tv_sec: secs,
                    tv_nsec: nsec,
                },
                last_modification: rustix::fs::Timespec {
                    tv_sec: secs,
                    tv_nsec: nsec,
                },
            },
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }
}

pub fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

pub fn setx(p: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty()).unwrap();
}

/// One line per entry: everything a round trip must keep.
pub fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    walk(root, root, &mut out, &mut inodes);
    out
}

fn walk(
    root: &Path,
    p: &Path,
    out: &mut BTreeMap<String, String>,
    inodes: &mut BTreeMap<(u64, u64), String>,
) {
    let m = std::fs::symlink_metadata(p).unwrap();
    let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        "dir".to_string()
    } else if ft.is_symlink() {
        format!("symlink->{}", std::fs::read_link(p).unwrap().display())
    } else if ft.is_file() {
        let first = inodes
            .entry((m.dev(), m.ino()))
            .or_insert_with(|| rel.clone())
            .clone();
        let data = std::fs::read(p).unwrap();
        format!(
            "file size={} sha={} inode-of={first}",
            data.len(),
            bothy_blob::Digest::of(&data).hex()
        )
    } else if ft.is_char_device() {
        format!("char {}", m.rdev())
    } else if ft.is_fifo() {
        "fifo".to_string()
    } else {
        "other".to_string()
    };
    let mut xattrs = Vec::new();
    let mut names = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(p, &mut names[..]).unwrap();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name = std::str::from_utf8(name).unwrap();
        let mut v = vec![0u8; 4096];
        let len = rustix::fs::lgetxattr(p, name, &mut v[..]).unwrap();
        xattrs.push(format!("{name}={:?}", &v[..len]));
    }
    xattrs.sort();
    // Directory mtimes are compared too (restored after their children).
    out.insert(
        rel,
        format!(
            "{kind} mode={:o} uid={} gid={} mtime={}.{} xattrs={xattrs:?}",
            m.mode(),
            m.uid(),
            m.gid(),
            m.mtime(),
            m.mtime_nsec()
        ),
    );
    if ft.is_dir() {
        let mut children: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        children.sort();
        for c in children {
            walk(root, &c, out, inodes);
        }
    }
}
