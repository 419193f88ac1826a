//! `bothy`: one binary for the CLI, the daemon (`bothy serve`) and the in-sandbox agent
//! (`bothy agent`, PID 1 of every sandbox).

mod cli;

fn main() {
    // The runtime re-executes this binary as `bothy __sandbox-init` to build each sandbox:
    // dispatch before anything else (no argument parsing, no threads).
    if std::env::args().nth(1).as_deref() == Some("__sandbox-init") {
        bothy_runtime::native::init_main()
    }
    std::process::exit(cli::main());
}
