//! Checks shared by every request that starts a program (exec, processes, sessions, terminals,
//! interpreter contexts) or sets an environment (sandboxes).

use std::collections::BTreeMap;

use crate::ApiError;

/// Environment variable names must be non-empty without `=` or NUL; values without NUL.
pub fn validate_env(env: &BTreeMap<String, String>) -> Result<(), ApiError> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(ApiError::invalid(format!(
                "invalid environment variable {k:?}: names must be non-empty without '=' or NUL"
            )));
        }
    }
    Ok(())
}

/// Exactly one of `argv` (non-empty) and `shell` must be given.
pub fn validate_argv_or_shell(
    argv: Option<&[String]>,
    shell: Option<&str>,
) -> Result<(), ApiError> {
    match (argv, shell) {
        (Some(_), Some(_)) => Err(ApiError::invalid("give either argv or shell, not both")),
        (None, None) => Err(ApiError::invalid("give argv (a list) or shell (a string)")),
        (Some([]), None) => Err(ApiError::invalid("argv is empty")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_and_program_checks() {
        let ok: BTreeMap<String, String> = [("A".into(), "1".into())].into();
        assert!(validate_env(&ok).is_ok());
        for bad in ["", "A=B", "A\0"] {
            let env: BTreeMap<String, String> = [(bad.to_string(), "v".to_string())].into();
            assert!(validate_env(&env).is_err(), "{bad:?}");
        }
        let v: BTreeMap<String, String> = [("A".into(), "x\0".into())].into();
        assert!(validate_env(&v).is_err());
        let argv = vec!["true".to_string()];
        assert!(validate_argv_or_shell(Some(&argv), None).is_ok());
        assert!(validate_argv_or_shell(None, Some("true")).is_ok());
        assert!(validate_argv_or_shell(Some(&argv), Some("x")).is_err());
        assert!(validate_argv_or_shell(None, None).is_err());
        assert!(validate_argv_or_shell(Some(&[]), None).is_err());
    }
}
