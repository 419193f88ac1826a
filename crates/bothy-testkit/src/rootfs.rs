//! Root file systems for tests of imported images.

/// A minimal rootfs: the host's dash and the libraries it needs, nothing else. It has no glibc
/// of its own beyond what dash needs, so it also proves the agent does not depend on the image.
pub fn minimal_rootfs(dir: &std::path::Path) {
    let sh = std::fs::canonicalize("/bin/dash").expect("dash on the host");
    let ldd = std::process::Command::new("ldd")
        .arg(&sh)
        .output()
        .expect("ldd");
    let mut files = vec![sh.clone()];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        if let Some(p) = line.split_whitespace().find(|w| w.starts_with('/')) {
            files.push(std::path::PathBuf::from(p));
        }
    }
    for f in files {
        let real = std::fs::canonicalize(&f).unwrap();
        for dest in [f.clone(), real.clone()] {
            let target = dir.join(dest.strip_prefix("/").unwrap());
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            let _ = std::fs::copy(&real, &target);
        }
    }
    std::fs::create_dir_all(dir.join("bin")).ok();
    let _ = std::fs::copy(&sh, dir.join("bin/sh"));
    std::fs::write(dir.join("hello.txt"), "from the image\n").unwrap();
}
