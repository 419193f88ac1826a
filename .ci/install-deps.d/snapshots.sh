# Snapshot tests (crates/bothy/tests/snapshots.rs) build a git repository inside a sandbox of
# the host image (which sees the host's /usr), and pack a dependency archive with tar on the host.
command -v git >/dev/null || apt_install git
command -v tar >/dev/null || apt_install tar
