//! Embeds the web console (`ui/` at the repository root) into the crate.
//!
//! The console's own files are `ui/src/*`; xterm.js and its fit addon come from the npm
//! registry, pinned by `ui/package-lock.json`. They are taken from, in order:
//! 1. `$BOTHY_UI_NODE_MODULES` (a `node_modules` directory, for offline builds);
//! 2. `ui/node_modules` if someone ran `npm ci` there;
//! 3. otherwise `npm ci --omit=dev` run here, in `$OUT_DIR` (never in the source tree).
//!
//! Nothing is bundled or minified: the browser loads xterm's own UMD builds as they ship.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Files taken from `node_modules`: (path inside node_modules, name served under /ui/).
const VENDOR: &[(&str, &str)] = &[
    ("@xterm/xterm/lib/xterm.js", "xterm.js"),
    ("@xterm/xterm/css/xterm.css", "xterm.css"),
    ("@xterm/addon-fit/lib/addon-fit.js", "addon-fit.js"),
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let ui = manifest.join("../../ui");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed={}", ui.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        ui.join("package.json").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        ui.join("package-lock.json").display()
    );
    println!("cargo:rerun-if-env-changed=BOTHY_UI_NODE_MODULES");

    let modules = node_modules(&ui, &out);
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let mut own: Vec<_> = std::fs::read_dir(ui.join("src"))
        .expect("read ui/src")
        .map(|e| e.expect("read ui/src").path())
        .filter(|p| p.is_file())
        .collect();
    own.sort();
    for p in own {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        files.push((name, p));
    }
    for (src, name) in VENDOR {
        let p = modules.join(src);
        assert!(
            p.is_file(),
            "{} is missing: run `npm ci` in ui/",
            p.display()
        );
        files.push((name.to_string(), p));
    }

    let mut table = String::from("pub(crate) static ASSETS: &[(&str, &[u8])] = &[\n");
    for (name, path) in &files {
        table.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            path.canonicalize().unwrap()
        ));
    }
    table.push_str("];\n");
    std::fs::write(out.join("assets.rs"), table).expect("write assets.rs");
}

/// Finds or installs the npm dependencies; returns the `node_modules` directory.
fn node_modules(ui: &Path, out: &Path) -> PathBuf {
    let complete = |m: &Path| VENDOR.iter().all(|(f, _)| m.join(f).is_file());
    if let Ok(dir) = std::env::var("BOTHY_UI_NODE_MODULES") {
        let dir = PathBuf::from(dir);
        assert!(
            complete(&dir),
            "BOTHY_UI_NODE_MODULES={} lacks xterm",
            dir.display()
        );
        return dir;
    }
    let local = ui.join("node_modules");
    if complete(&local) {
        return local;
    }
    let work = out.join("npm");
    let modules = work.join("node_modules");
    let lock = std::fs::read(ui.join("package-lock.json")).expect("read ui/package-lock.json");
    let stamp = work.join("lock.stamp");
    if complete(&modules) && std::fs::read(&stamp).ok().as_deref() == Some(&lock[..]) {
        return modules;
    }
    std::fs::create_dir_all(&work).expect("create npm work dir");
    std::fs::copy(ui.join("package.json"), work.join("package.json")).expect("copy package.json");
    std::fs::write(work.join("package-lock.json"), &lock).expect("copy package-lock.json");
    let status = Command::new("npm")
        .args([
            "ci",
            "--omit=dev",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
        ])
        .current_dir(&work)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "`npm ci` for the web console failed ({s}); run it by hand in ui/ or set \
             BOTHY_UI_NODE_MODULES to a node_modules with @xterm/xterm and @xterm/addon-fit"
        ),
        Err(e) => panic!(
            "cannot run npm ({e}): the web console needs xterm.js from the npm registry; \
             install node and npm, or set BOTHY_UI_NODE_MODULES"
        ),
    }
    std::fs::write(&stamp, &lock).expect("write stamp");
    modules
}
