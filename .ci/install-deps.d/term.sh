# Terminals and web console (issue 5), sourced by .ci/run from the repository root:
# headless Chromium for the console's browser test, tmux for driving `bothy shell`, curl for
# the auth checks, and ui/'s npm packages (xterm.js, and playwright-core to drive Chromium).
apt_install chromium tmux curl
if [ ! -d ui/node_modules/playwright-core ] || [ ! -d ui/node_modules/@xterm/xterm ]; then
  (cd ui && npm ci --no-audit --no-fund)
fi
