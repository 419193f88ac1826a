//! The wrapper a session command runs in, and the state it leaves behind.
//!
//! No shell outlives a command: each exec in a session runs a fresh `bash` (or `/bin/sh`) that
//! restores the session (cd, environment, `$?`), runs the user's command in the same shell, and
//! on `EXIT` (which also fires on `exit 3`) writes the shell's `$?`, `$PWD` and exported
//! environment, NUL-separated, to a state file. The user's command writes straight to the
//! command's stdout and stderr, so output stays byte-exact; the state never touches them.
//!
//! Limits (documented in `docs/API.md`): a command that replaces the `EXIT` trap or `exec`s
//! another program leaves no state behind, so its `cd`/`export` are not kept (its exit code
//! is, from the process status).

use std::collections::BTreeMap;
use std::path::Path;

/// Variables the shell manages itself; they are never recorded as session changes.
pub const SHELL_MANAGED: &[&str] = &["_", "SHLVL", "PWD", "OLDPWD"];

/// Which shell runs session commands: bash if the sandbox has it, else `/bin/sh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Sh,
}

impl Shell {
    pub fn detect() -> Self {
        if Path::new("/bin/bash").exists() || Path::new("/usr/bin/bash").exists() {
            Self::Bash
        } else {
            Self::Sh
        }
    }

    /// Program and leading arguments (the script follows).
    pub fn program(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Self::Bash if Path::new("/bin/bash").exists() => {
                ("/bin/bash", &["--noprofile", "--norc"])
            }
            Self::Bash => ("/usr/bin/bash", &["--noprofile", "--norc"]),
            Self::Sh => ("/bin/sh", &[]),
        }
    }
}

/// Quotes `s` for a POSIX shell: `'…'` with embedded `'` as `'\''`.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The user's command.
pub enum UserCommand<'a> {
    /// A command line, run in the session's shell itself (so `cd` and `export` persist).
    Shell(&'a str),
    /// A program and its arguments, passed as positional parameters and run as `"$@"`.
    Argv,
}

/// Builds the script: restore, run, dump on exit.
pub fn build(
    shell: Shell,
    state_file: &Path,
    cwd: &str,
    last_exit: i32,
    cmd: &UserCommand,
) -> String {
    let mut s = format!("__bothy_state={}\n", quote(&state_file.to_string_lossy()));
    match shell {
        Shell::Bash => {
            // Builtins are called with `builtin` and the test is `[[ ]]`, so user functions
            // named like them cannot break the dump; errexit/nounset are cleared and IFS reset
            // because the command may have set them.
            s.push_str("__bothy_nl=$'\\n'\n");
            s.push_str(concat!(
                r#"trap '__bothy_rc=$?; set +eu; IFS=$__bothy_nl; set -f; { "#,
                r#"{ builtin printf "%s\0%s\0" "$__bothy_rc" "${PWD:-$(builtin pwd)}"; "#,
                r#"for __bothy_n in $(builtin compgen -e); do "#,
                r#"[[ -n "${!__bothy_n+x}" ]] && builtin printf "%s=%s\0" "$__bothy_n" "${!__bothy_n}"; "#,
                r#"done; } >"$__bothy_state"; } 2>/dev/null; builtin exit $__bothy_rc' EXIT"#,
                "\n"
            ));
        }
        Shell::Sh => {
            s.push_str(concat!(
                r#"trap '__bothy_rc=$?; { { printf "%s\000%s\000" "$__bothy_rc" "$(pwd)"; "#,
                r#"/usr/bin/env -0 2>/dev/null || env -0; } >"$__bothy_state"; } 2>/dev/null; "#,
                r#"exit $__bothy_rc' EXIT"#,
                "\n"
            ));
        }
    }
    s.push_str(&format!(
        "cd -- {} 2>/dev/null || cd -- /workspace 2>/dev/null || cd /\n",
        quote(cwd)
    ));
    if last_exit != 0 {
        s.push_str(&format!("( exit {} )\n", last_exit & 0xff));
    } else {
        s.push_str("true\n");
    }
    match cmd {
        UserCommand::Shell(line) => {
            s.push_str(line);
            s.push('\n');
        }
        UserCommand::Argv => s.push_str("\"$@\"\n"),
    }
    s
}

/// What the state file said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    pub exit_code: i32,
    pub cwd: String,
    pub env: BTreeMap<String, String>,
}

/// Parses a state file; `None` if it is missing or malformed (e.g. the command replaced the
/// trap, or was killed before it could run).
pub fn parse(bytes: &[u8]) -> Option<Dump> {
    let mut parts = bytes.split(|b| *b == 0);
    let exit_code = std::str::from_utf8(parts.next()?)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cwd = String::from_utf8(parts.next()?.to_vec()).ok()?;
    if !cwd.starts_with('/') {
        return None;
    }
    let mut env = BTreeMap::new();
    for kv in parts {
        if kv.is_empty() {
            continue;
        }
        let Ok(kv) = std::str::from_utf8(kv) else {
            continue;
        };
        if let Some((k, v)) = kv.split_once('=') {
            if !k.is_empty() {
                env.insert(k.to_string(), v.to_string());
            }
        }
    }
    Some(Dump {
        exit_code,
        cwd,
        env,
    })
}

/// A session's changes to the environment, relative to the sandbox's environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvDelta {
    pub set: BTreeMap<String, String>,
    pub unset: Vec<String>,
}

impl EnvDelta {
    /// The environment a command starts with: `baseline` with the delta applied, then the
    /// one-shot variables of this exec.
    pub fn apply(
        &self,
        baseline: &BTreeMap<String, String>,
        one_shot: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let mut env = baseline.clone();
        for k in &self.unset {
            env.remove(k);
        }
        env.extend(self.set.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(one_shot.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    /// The new delta after a command left `after` as its environment. A one-shot variable the
    /// command did not change keeps the session's previous state for that name.
    pub fn after(
        &self,
        baseline: &BTreeMap<String, String>,
        one_shot: &BTreeMap<String, String>,
        after: &BTreeMap<String, String>,
    ) -> EnvDelta {
        let mut out = EnvDelta::default();
        let managed = |k: &str| SHELL_MANAGED.contains(&k);
        let untouched_one_shot = |k: &str| match (one_shot.get(k), after.get(k)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
        for (k, v) in after {
            if managed(k) {
                continue;
            }
            if untouched_one_shot(k) {
                if let Some(prev) = self.set.get(k) {
                    out.set.insert(k.clone(), prev.clone());
                }
                continue;
            }
            if baseline.get(k) != Some(v) {
                out.set.insert(k.clone(), v.clone());
            }
        }
        for k in baseline.keys() {
            if !managed(k) && !after.contains_key(k) {
                out.unset.push(k.clone());
            }
        }
        // A one-shot variable left untouched that the session had unset stays unset.
        for k in &self.unset {
            if untouched_one_shot(k) && baseline.contains_key(k) && !out.unset.contains(k) {
                out.unset.push(k.clone());
            }
        }
        out.unset.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn quotes_anything() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn parses_dumps() {
        let d = parse(b"3\0/tmp/x\0A=1\0B=x=y\nz\0").unwrap();
        assert_eq!(d.exit_code, 3);
        assert_eq!(d.cwd, "/tmp/x");
        assert_eq!(d.env, map(&[("A", "1"), ("B", "x=y\nz")]));
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"x\0/"), None);
    }

    #[test]
    fn delta_tracks_sets_unsets_and_one_shots() {
        let base = map(&[("PATH", "/bin"), ("HOME", "/root"), ("KEEP", "1")]);
        let d0 = EnvDelta {
            set: map(&[("S", "session")]),
            unset: vec![],
        };
        let one = map(&[("TMPV", "x"), ("S", "override")]);
        assert_eq!(
            d0.apply(&base, &one),
            map(&[
                ("PATH", "/bin"),
                ("HOME", "/root"),
                ("KEEP", "1"),
                ("TMPV", "x"),
                ("S", "override")
            ])
        );
        // The command exported NEW, unset HOME, left the one-shots alone.
        let after = map(&[
            ("PATH", "/bin"),
            ("KEEP", "1"),
            ("TMPV", "x"),
            ("S", "override"),
            ("NEW", "n"),
            ("SHLVL", "1"),
        ]);
        let d1 = d0.after(&base, &one, &after);
        assert_eq!(d1.set, map(&[("S", "session"), ("NEW", "n")]));
        assert_eq!(d1.unset, vec!["HOME".to_string()]);
    }
}
