fn main() {
    // The runtime re-executes this binary as `bothy __sandbox-init` to build each sandbox.
    if std::env::args().nth(1).as_deref() == Some("__sandbox-init") {
        bothy_runtime::native::init_main()
    }
}
