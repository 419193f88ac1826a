//! Language runtimes: finding the interpreter in the sandbox and putting the runner scripts
//! (embedded in the agent binary) where it can read them.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bothy_api::interp::Language;
use bothy_api::{ApiError, ErrorCode};

const PYTHON_RUNNER: &str = include_str!("runner.py");
const NODE_RUNNER: &str = include_str!("runner.js");

/// The interpreter program of a language and the arguments that start its runner.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Environment the runner needs on top of the context's.
    pub env: BTreeMap<String, String>,
}

fn find_in_path(names: &[&str], path_var: &str) -> Option<PathBuf> {
    for name in names {
        for dir in path_var.split(':').filter(|d| d.starts_with('/')) {
            let p = Path::new(dir).join(name);
            if let Ok(m) = std::fs::metadata(&p) {
                if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                    return Some(p);
                }
            }
        }
    }
    None
}

fn missing(language: Language) -> ApiError {
    let what = match language {
        Language::Python => {
            "python3 is not installed in this sandbox; install it (for example \
             `apt-get install -y python3`) or use an image that has it"
        }
        Language::Javascript | Language::Typescript => {
            "node is not installed in this sandbox; install Node.js (for example \
             `apt-get install -y nodejs`) or use an image that has it"
        }
    };
    ApiError::new(
        ErrorCode::RuntimeNotFound,
        format!("cannot run {language}: {what}"),
    )
}

/// Writes `content` to `dir/name` unless it is there already, atomically.
fn materialize(dir: &Path, name: &str, content: &str) -> std::io::Result<PathBuf> {
    let path = dir.join(name);
    if std::fs::read(&path).is_ok_and(|b| b == content.as_bytes()) {
        return Ok(path);
    }
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// How to start a runner for `language`, given the context's `PATH` and the directory for the
/// runner scripts.
pub fn launch(language: Language, path_var: &str, runner_dir: &Path) -> Result<Launch, ApiError> {
    let write = |name: &str, content: &str| {
        materialize(runner_dir, name, content).map_err(|e| {
            ApiError::internal(format!(
                "could not write the {language} runner to {}: {e}",
                runner_dir.display()
            ))
        })
    };
    match language {
        Language::Python => {
            let program = find_in_path(&["python3"], path_var).ok_or_else(|| missing(language))?;
            let runner = write("runner.py", PYTHON_RUNNER)?;
            let env = [
                // Figures render off-screen and are captured after each run.
                ("MPLBACKEND", "Agg"),
                ("PYTHONIOENCODING", "utf-8"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            Ok(Launch {
                program,
                args: vec![runner.display().to_string()],
                env,
            })
        }
        Language::Javascript | Language::Typescript => {
            let program =
                find_in_path(&["node", "nodejs"], path_var).ok_or_else(|| missing(language))?;
            let runner = write("runner.js", NODE_RUNNER)?;
            Ok(Launch {
                program,
                args: vec![runner.display().to_string()],
                env: BTreeMap::new(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_runtime_names_what_to_install() {
        let dir = std::env::temp_dir().join(format!("bothy-interp-rt-{}", std::process::id()));
        let e = launch(Language::Python, "/nonexistent", &dir).unwrap_err();
        assert_eq!(e.code, ErrorCode::RuntimeNotFound);
        assert!(
            e.message.contains("apt-get install -y python3"),
            "{}",
            e.message
        );
        let e = launch(Language::Typescript, "", &dir).unwrap_err();
        assert!(e.message.contains("node"), "{}", e.message);
    }

    #[test]
    fn runner_is_written_once() {
        let dir = std::env::temp_dir().join(format!("bothy-interp-mat-{}", std::process::id()));
        let p = materialize(&dir, "r.py", "print(1)\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "print(1)\n");
        let p2 = materialize(&dir, "r.py", "print(2)\n").unwrap();
        assert_eq!(std::fs::read_to_string(p2).unwrap(), "print(2)\n");
        let _ = std::fs::remove_dir_all(dir);
    }
}
