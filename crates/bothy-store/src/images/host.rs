//! The built-in `host` image, built with no download.
//!
//! It is a small *skeleton* layer plus the host directories shown read-only:
//!
//! - top level: for each of `/usr /bin /sbin /lib /lib32 /lib64 /libx32`, a host symlink is
//!   copied as a symlink (merged `/usr`: `bin -> usr/bin`) and a real directory becomes an empty
//!   mount point in the skeleton and an entry of [`HostImage::host_dirs`] (each is the lower
//!   layer of its own overlay, so it stays writable inside the sandbox);
//! - a filtered copy of `/etc` with no secrets (see [`excluded`]) and a fresh `/etc/hosts`;
//!   `/etc/machine-id` is written *empty* (systemd's "not yet initialised" state: nothing in the
//!   sandbox can identify the host by it, and software that wants one can write it, the overlay
//!   being writable); the host's `/etc/hostname` is left out (the sandbox has its own UTS
//!   namespace);
//! - fresh empty directories (`/root` 0700, `/tmp` and `/var/tmp` 1777, `/workspace`, `/home`,
//!   `/run`, `/proc`, `/sys`, `/dev`, `/mnt`, `/opt`, `/srv`, `/var/{log,cache,lib}`); nothing
//!   else of the host (not `/work`, not `/root`, not the data directory).
//!
//! Everything in the skeleton is owned by 0:0 (it is mounted idmapped). The skeleton is planned
//! in memory (`/etc` is a few MB), hashed, and only written when no layer with that id exists:
//! at every daemon start, an unchanged host costs one read of `/etc` and a hash.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{io_err, new_temp_dir, publish, HostImage, ImageError, Kind, TreeHasher};
use crate::Layout;

/// Top-level host entries that are either copied as symlinks or shown as host directories.
const TOP_LEVEL: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Fresh empty directories of the skeleton, with their modes.
const FRESH_DIRS: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("home", 0o755),
    ("mnt", 0o755),
    ("opt", 0o755),
    ("proc", 0o555),
    ("root", 0o700),
    ("run", 0o755),
    ("srv", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("var", 0o755),
    ("var/cache", 0o755),
    ("var/lib", 0o755),
    ("var/log", 0o755),
    ("var/tmp", 0o1777),
    ("workspace", 0o755),
];

const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// Version of the skeleton's recipe: bump it when the recipe changes so that a new layer is
/// built even if the host's `/etc` did not change.
const RECIPE: &str = "bothy-host-skeleton v1";

/// Builds (or reuses) the host image's skeleton layer from the real host (`/`).
pub fn ensure_host_image(layout: &Layout) -> Result<HostImage, ImageError> {
    ensure_host_image_from(layout, Path::new("/"))
}

/// Same as [`ensure_host_image`], reading the host from `host_root` (tests use a fake root).
pub fn ensure_host_image_from(layout: &Layout, host_root: &Path) -> Result<HostImage, ImageError> {
    let (plan, host_dirs) = plan(host_root)?;
    let id = format!("host-{}", hash(&plan));
    if !layout.layer(&id).is_dir() {
        let tmp = new_temp_dir(layout)?;
        if let Err(e) = build(&plan, &tmp) {
            super::remove_tree(&tmp);
            return Err(e);
        }
        let existed = publish(layout, &tmp, &id)?;
        if !existed {
            tracing::info!(layer = %id, "built host skeleton layer");
        }
    }
    Ok(HostImage {
        skeleton_layer: id,
        host_dirs,
    })
}

/// One planned entry of the skeleton (always owned by 0:0).
#[derive(Debug)]
enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: PathBuf },
}

/// Entries by path relative to the layer root. `PathBuf`'s order is component-wise, so parents
/// come before their children.
type Plan = BTreeMap<PathBuf, Node>;

fn plan(host_root: &Path) -> Result<(Plan, Vec<PathBuf>), ImageError> {
    let mut plan = Plan::new();
    let mut host_dirs = Vec::new();
    for name in TOP_LEVEL {
        let src = host_root.join(name);
        let md = match fs::symlink_metadata(&src) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(format!("stat {}", src.display()))(e)),
        };
        if md.file_type().is_symlink() {
            let target =
                fs::read_link(&src).map_err(io_err(format!("read link {}", src.display())))?;
            plan.insert(PathBuf::from(name), Node::Symlink { target });
        } else if md.is_dir() {
            plan.insert(PathBuf::from(name), Node::Dir { mode: 0o755 });
            host_dirs.push(src);
        }
    }
    if !host_dirs.iter().any(|d| d.ends_with("usr")) {
        return Err(ImageError::Invalid(format!(
            "{} is not a directory: the host image needs the host's /usr",
            host_root.join("usr").display()
        )));
    }
    for (dir, mode) in FRESH_DIRS {
        plan.insert(PathBuf::from(dir), Node::Dir { mode: *mode });
    }

    plan.insert(PathBuf::from("etc"), Node::Dir { mode: 0o755 });
    let etc = host_root.join("etc");
    if etc.is_dir() {
        copy_etc(&etc, Path::new(""), &mut plan)?;
    }
    set_file(&mut plan, "etc/hosts", 0o644, HOSTS.as_bytes().to_vec());
    set_file(&mut plan, "etc/machine-id", 0o444, Vec::new());
    Ok((plan, host_dirs))
}

/// Replaces whatever the plan has at `rel` (and below it) with a file.
fn set_file(plan: &mut Plan, rel: &str, mode: u32, data: Vec<u8>) {
    let rel = PathBuf::from(rel);
    plan.retain(|p, _| !p.starts_with(&rel));
    plan.insert(rel, Node::File { mode, data });
}

/// Adds `etc/<rel>/*` (recursively, filtered) to the plan.
fn copy_etc(etc: &Path, rel: &Path, plan: &mut Plan) -> Result<(), ImageError> {
    let dir = etc.join(rel);
    let rd = fs::read_dir(&dir).map_err(io_err(format!("read {}", dir.display())))?;
    for ent in rd {
        let ent = ent.map_err(io_err(format!("read {}", dir.display())))?;
        let child_rel = rel.join(ent.file_name());
        let src = etc.join(&child_rel);
        let md = fs::symlink_metadata(&src).map_err(io_err(format!("stat {}", src.display())))?;
        if excluded(&child_rel, &md) {
            continue;
        }
        let dst = Path::new("etc").join(&child_rel);
        let mode = md.mode() & 0o7777;
        let ft = md.file_type();
        if ft.is_symlink() {
            let target =
                fs::read_link(&src).map_err(io_err(format!("read link {}", src.display())))?;
            plan.insert(dst, Node::Symlink { target });
        } else if ft.is_dir() {
            plan.insert(dst, Node::Dir { mode });
            copy_etc(etc, &child_rel, plan)?;
        } else if ft.is_file() {
            let data = fs::read(&src).map_err(io_err(format!("read {}", src.display())))?;
            plan.insert(dst, Node::File { mode, data });
        }
    }
    Ok(())
}

/// Whether `etc/<rel>` stays out of the skeleton: secrets, host identity, anything that is not
/// public on the host (not readable — or, for a directory, not listable and searchable — by
/// "other"), and anything that is not a file, directory or symlink.
fn excluded(rel: &Path, md: &fs::Metadata) -> bool {
    let ft = md.file_type();
    if !(ft.is_file() || ft.is_dir() || ft.is_symlink()) {
        return true; // sockets, fifos, devices
    }
    let name = rel.file_name().map(|n| n.as_bytes()).unwrap_or_default();
    let parent = rel
        .parent()
        .map(|p| p.as_os_str().as_bytes())
        .unwrap_or_default();
    let top = parent.is_empty();
    if top {
        if name.starts_with(b"shadow") || name.starts_with(b"gshadow") {
            return true;
        }
        const TOP_EXCLUDED: &[&[u8]] = &[
            b"passwd-",
            b"group-",
            b"subuid",
            b"subuid-",
            b"subgid",
            b"subgid-",
            b"sudoers",
            b"sudoers.d",
            b"machine-id",
            b"hostname",
            b"krb5.keytab",
            b".pwd.lock",
            // Host tooling configuration that may carry credentials or credential helpers
            // (registry tokens, git credential helpers): the host's, not the sandbox's.
            b"npmrc",
            b"pip.conf",
            b"gitconfig",
            b"netrc",
            b".netrc",
            b"docker",
        ];
        if TOP_EXCLUDED.contains(&name) {
            return true;
        }
    }
    if parent == b"ssh" && name.starts_with(b"ssh_host_") && !name.ends_with(b".pub") {
        return true;
    }
    if (parent == b"ssl" && name == b"private") || (parent == b"security" && name == b"opasswd") {
        return true;
    }
    if ft.is_symlink() {
        return false;
    }
    let mode = md.mode();
    if ft.is_dir() {
        mode & 0o005 != 0o005
    } else {
        mode & 0o004 == 0
    }
}

fn hash(plan: &Plan) -> String {
    let mut h = TreeHasher::new(RECIPE);
    for (rel, node) in plan {
        match node {
            Node::Dir { mode } => h.entry(Kind::Dir, rel, *mode, 0, 0),
            Node::File { mode, data } => {
                h.entry(Kind::File, rel, *mode, 0, 0);
                h.bytes(data);
            }
            Node::Symlink { target } => {
                h.entry(Kind::Symlink, rel, 0o777, 0, 0);
                h.bytes(target.as_os_str().as_bytes());
            }
        }
    }
    h.finish()
}

fn build(plan: &Plan, root: &Path) -> Result<(), ImageError> {
    fix_owner_mode(root, 0o755)?;
    for (rel, node) in plan {
        let path = root.join(rel);
        match node {
            Node::Dir { mode } => {
                fs::create_dir(&path).map_err(io_err(format!("create {}", path.display())))?;
                fix_owner_mode(&path, *mode)?;
            }
            Node::File { mode, data } => {
                use std::io::Write;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(io_err(format!("create {}", path.display())))?;
                f.write_all(data)
                    .map_err(io_err(format!("write {}", path.display())))?;
                fix_owner_mode(&path, *mode)?;
            }
            Node::Symlink { target } => {
                std::os::unix::fs::symlink(target, &path)
                    .map_err(io_err(format!("create symlink {}", path.display())))?;
                std::os::unix::fs::lchown(&path, Some(0), Some(0))
                    .map_err(io_err(format!("chown {}", path.display())))?;
            }
        }
    }
    Ok(())
}

/// Owner 0:0, then the mode (in this order: chown clears set-id bits).
fn fix_owner_mode(path: &Path, mode: u32) -> Result<(), ImageError> {
    std::os::unix::fs::lchown(path, Some(0), Some(0))
        .map_err(io_err(format!("chown {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::is_root;
    use std::os::unix::fs::symlink;
    use std::time::Instant;

    fn names(root: &Path) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
                if fs::symlink_metadata(&p).unwrap().is_dir() {
                    walk(root, &p, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(root, root, &mut out);
        out.sort();
        out
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn real_host_skeleton() {
        if !is_root() {
            eprintln!("skipping: needs root");
            return;
        }
        let data = tempfile::tempdir().unwrap();
        let layout = Layout::new(data.path());
        let t = Instant::now();
        let img = ensure_host_image(&layout).unwrap();
        let built = t.elapsed();
        let t = Instant::now();
        let again = ensure_host_image(&layout).unwrap();
        let reused = t.elapsed();
        eprintln!("ensure_host_image: built in {built:?}, reused in {reused:?}");
        assert_eq!(img, again);
        assert!(img.skeleton_layer.starts_with("host-"));
        assert!(img.host_dirs.contains(&PathBuf::from("/usr")));

        let root = layout.layer(&img.skeleton_layer);
        let all = names(&root);
        for n in &all {
            assert!(!n.contains("shadow"), "{n} leaked");
            assert!(
                !n.starts_with("etc/ssh/ssh_host_") || n.ends_with(".pub"),
                "{n} leaked"
            );
            assert!(!n.starts_with("etc/ssl/private"), "{n} leaked");
            assert!(!n.starts_with("etc/sudoers"), "{n} leaked");
            assert!(n != "work" && !n.starts_with("work/"), "{n} leaked");
        }
        assert!(root.join("workspace").is_dir());
        assert!(!root.join("work").exists());
        assert_eq!(mode(&root.join("tmp")), 0o1777);
        assert_eq!(mode(&root.join("var/tmp")), 0o1777);
        assert_eq!(mode(&root.join("root")), 0o700);
        assert_eq!(fs::read_dir(root.join("root")).unwrap().count(), 0);
        assert_eq!(fs::read(root.join("etc/machine-id")).unwrap(), b"");
        assert!(fs::read_to_string(root.join("etc/hosts"))
            .unwrap()
            .starts_with("127.0.0.1\tlocalhost\n"));
        if fs::symlink_metadata("/bin")
            .unwrap()
            .file_type()
            .is_symlink()
        {
            assert_eq!(
                fs::read_link(root.join("bin")).unwrap(),
                fs::read_link("/bin").unwrap()
            );
            assert!(!img.host_dirs.contains(&PathBuf::from("/bin")));
        }
        for n in &all {
            let md = fs::symlink_metadata(root.join(n)).unwrap();
            assert_eq!((md.uid(), md.gid()), (0, 0), "{n}");
            if !md.file_type().is_symlink() {
                let public = if md.is_dir() { 0o005 } else { 0o004 };
                if n.starts_with("etc/") {
                    assert_eq!(md.mode() & public, public, "{n} is not public on the host");
                }
            }
        }
    }

    /// A fake host root with secrets that must stay out.
    fn fake_root() -> tempfile::TempDir {
        let r = tempfile::tempdir().unwrap();
        let p = r.path();
        let mk = |rel: &str, m: u32, data: &str| {
            let f = p.join(rel);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(&f, data).unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(m)).unwrap();
        };
        fs::create_dir_all(p.join("usr/bin")).unwrap();
        fs::create_dir_all(p.join("lib64")).unwrap();
        fs::create_dir_all(p.join("work/secret-project")).unwrap();
        fs::create_dir_all(p.join("root/.ssh")).unwrap();
        symlink("usr/bin", p.join("bin")).unwrap();
        mk("etc/passwd", 0o644, "root:x:0:0::/root:/bin/sh\n");
        mk("etc/passwd-", 0o644, "old\n");
        mk("etc/group", 0o644, "root:x:0:\n");
        mk("etc/shadow", 0o640, "root:$6$secret:::\n");
        mk("etc/shadow-", 0o640, "root:$6$old:::\n");
        mk("etc/gshadow", 0o640, "root:::\n");
        mk("etc/subuid", 0o644, "x:100000:65536\n");
        mk("etc/sudoers", 0o440, "root ALL=(ALL) ALL\n");
        mk("etc/sudoers.d/extra", 0o644, "x\n");
        mk(
            "etc/machine-id",
            0o444,
            "0123456789abcdef0123456789abcdef\n",
        );
        mk("etc/hostname", 0o644, "secret-host\n");
        mk("etc/hosts", 0o644, "10.0.0.1 secret-host\n");
        mk("etc/resolv.conf", 0o644, "nameserver 127.0.0.53\n");
        mk("etc/ssh/ssh_host_ed25519_key", 0o600, "PRIVATE\n");
        mk(
            "etc/ssh/ssh_host_rsa_key",
            0o644,
            "PRIVATE but world-readable\n",
        );
        mk(
            "etc/ssh/ssh_host_ed25519_key.pub",
            0o644,
            "ssh-ed25519 AAAA\n",
        );
        mk("etc/ssh/sshd_config", 0o644, "Port 22\n");
        mk("etc/ssl/private/server.key", 0o644, "KEY\n");
        mk("etc/ssl/certs/ca.pem", 0o644, "CERT\n");
        mk("etc/security/opasswd", 0o644, "old\n");
        mk("etc/krb5.keytab", 0o644, "KEYTAB\n");
        mk("etc/app/token", 0o600, "TOKEN\n");
        mk("etc/locked/inside", 0o644, "x\n");
        fs::set_permissions(p.join("etc/locked"), fs::Permissions::from_mode(0o750)).unwrap();
        symlink("../proc/self/mounts", p.join("etc/mtab")).unwrap();
        symlink("/etc/shadow-nonexistent-target", p.join("etc/dangling")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p.join("etc/initctl"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        r
    }

    #[test]
    fn fake_host_filters_and_ids() {
        if !is_root() {
            eprintln!("skipping: needs root (the skeleton is chowned to 0)");
            return;
        }
        let host = fake_root();
        let data = tempfile::tempdir().unwrap();
        let layout = Layout::new(data.path());
        let img = ensure_host_image_from(&layout, host.path()).unwrap();
        assert_eq!(
            img.host_dirs,
            vec![host.path().join("usr"), host.path().join("lib64")]
        );
        let root = layout.layer(&img.skeleton_layer);
        let all = names(&root);
        let etc: Vec<&str> = all.iter().filter_map(|n| n.strip_prefix("etc/")).collect();
        let mut expected = vec![
            "app",
            "dangling",
            "group",
            "hosts",
            "machine-id",
            "mtab",
            "passwd",
            "resolv.conf",
            "security",
            "ssh",
            "ssh/ssh_host_ed25519_key.pub",
            "ssh/sshd_config",
            "ssl",
            "ssl/certs",
            "ssl/certs/ca.pem",
        ];
        expected.sort();
        assert_eq!(etc, expected);
        assert_eq!(
            fs::read_link(root.join("etc/mtab")).unwrap(),
            Path::new("../proc/self/mounts")
        );
        assert_eq!(
            fs::read_link(root.join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        assert!(root.join("usr").is_dir() && root.join("lib64").is_dir());
        assert_eq!(fs::read_dir(root.join("usr")).unwrap().count(), 0);
        assert!(!root.join("work").exists());
        assert_eq!(fs::read_dir(root.join("root")).unwrap().count(), 0);
        assert!(!fs::read_to_string(root.join("etc/hosts"))
            .unwrap()
            .contains("secret"));
        assert_eq!(fs::read(root.join("etc/machine-id")).unwrap(), b"");

        // Stable when nothing changed (and nothing new is built).
        let again = ensure_host_image_from(&layout, host.path()).unwrap();
        assert_eq!(again, img);
        let layers = || fs::read_dir(layout.layers()).unwrap().count();
        assert_eq!(layers(), 1);

        // A changed file under /etc yields a new layer; the old one is untouched.
        fs::write(
            host.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/bash\n",
        )
        .unwrap();
        let changed = ensure_host_image_from(&layout, host.path()).unwrap();
        assert_ne!(changed.skeleton_layer, img.skeleton_layer);
        assert_eq!(layers(), 2);
        assert_eq!(
            fs::read_to_string(layout.layer(&img.skeleton_layer).join("etc/passwd")).unwrap(),
            "root:x:0:0::/root:/bin/sh\n"
        );
        // So does a changed mode.
        fs::set_permissions(
            host.path().join("etc/group"),
            fs::Permissions::from_mode(0o664),
        )
        .unwrap();
        let changed2 = ensure_host_image_from(&layout, host.path()).unwrap();
        assert_ne!(changed2.skeleton_layer, changed.skeleton_layer);
        // No temporary directories left behind.
        assert_eq!(crate::images::remove_stale_temp_dirs(&layout).unwrap(), 0);
    }

    #[test]
    fn host_without_usr_is_refused() {
        let host = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let err = ensure_host_image_from(&Layout::new(data.path()), host.path()).unwrap_err();
        assert!(matches!(err, ImageError::Invalid(m) if m.contains("/usr")));
    }
}
