# Terminals and web console (issue 5): headless Chromium for the console's browser tests and
# tmux for driving `bothy shell`. Idempotent: installs only what is missing.
if ! command -v chromium >/dev/null 2>&1 || ! command -v tmux >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium tmux
fi
