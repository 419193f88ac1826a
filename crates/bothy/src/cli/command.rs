//! What to run, as `bothy exec` and `bothy start` take it: `-- CMD [ARGS…]` or `--sh LINE`,
//! with environment variables and a working directory.

use std::collections::BTreeMap;

use super::sandbox::parse_env;

#[derive(clap::Args)]
pub struct CommandArgs {
    /// Run this command line with /bin/sh -c instead of CMD.
    #[arg(long = "sh", value_name = "COMMAND_LINE", conflicts_with = "cmd")]
    pub shell: Option<String>,
    /// Environment variable for the command (repeatable): --env KEY=VALUE.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory (relative to /workspace unless absolute).
    #[arg(long, short = 'w')]
    pub cwd: Option<String>,
    /// The command and its arguments (no shell).
    #[arg(last = true)]
    pub cmd: Vec<String>,
}

/// A checked [`CommandArgs`]: exactly one of `argv` and `shell` is set.
pub struct Command {
    pub argv: Option<Vec<String>>,
    pub shell: Option<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
}

impl CommandArgs {
    /// Checks that there is something to run and parses the environment.
    pub fn resolve(self) -> anyhow::Result<Command> {
        if self.cmd.is_empty() && self.shell.is_none() {
            anyhow::bail!("nothing to run: give `-- CMD [ARGS…]` or `--sh 'command line'`");
        }
        Ok(Command {
            argv: (!self.cmd.is_empty()).then_some(self.cmd),
            shell: self.shell,
            env: parse_env(&self.env)?,
            cwd: self.cwd,
        })
    }
}
