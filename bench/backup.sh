#!/usr/bin/env bash
# Directory backups (issue 8): "restore a cloned + installed workspace" from a backup against
# "redo the clone and the install", in the same run, through a real daemon. Needs root.
#
# In a sandbox: a git repository of SRC_FILES source files (the "origin") and PKGS npm package
# tarballs of FILES_PER_PKG small files each (a node_modules-like tree). Each round then
#   redo:    git clone the origin + `npm install --offline` of the local tarballs   (sandbox a)
#   redo-tar: git clone + unpack each tarball with tar (the floor of any install)   (sandbox a)
#   restore: `bothy restore-backup` of the workspace backed up once                 (sandbox b)
# and prints medians side by side. ROUNDS (default 5), PKGS (300), FILES_PER_PKG (12),
# SRC_FILES (500); BOTHY_BIN (default: the release build, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
PKGS=${PKGS:-300}
FILES_PER_PKG=${FILES_PER_PKG:-12}
SRC_FILES=${SRC_FILES:-500}
BIN=${BOTHY_BIN:-target/x86_64-unknown-linux-gnu/release/bothy}
[ -x "$BIN" ] || cargo build --release -p bothy
BIN=$(realpath "$BIN")

DATA=$(mktemp -d /tmp/bothy-bench-backup.XXXXXX)
CG="bothy-bench-backup-$$"
"$BIN" serve --data-dir "$DATA" --cgroup-parent "$CG" >"$DATA/daemon.log" 2>&1 &
DPID=$!
export BOTHY_URL="unix:$DATA/bothy.sock"
cleanup() {
  for s in a b; do "$BIN" rm -f "$s" >/dev/null 2>&1 || true; done
  kill "$DPID" 2>/dev/null || true
  wait "$DPID" 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT
"$BIN" status --wait 30 >/dev/null

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
b() { "$BIN" "$@"; }
in_a() { b exec a -- sh -c "$1" >/dev/null; }

b get a >/dev/null
b get b >/dev/null
echo "preparing: $SRC_FILES source files, $PKGS packages × $FILES_PER_PKG files" >&2
in_a "set -e
mkdir -p /opt/src /opt/pkgs && cd /opt/src
for i in \$(seq 1 $SRC_FILES); do d=src/m\$((i % 25)); mkdir -p \$d; printf 'export const v%d = %d;\n' \$i \$i > \$d/f\$i.js; done
git init -q . && git add -A && git -c user.email=b@x -c user.name=b commit -qm init
git clone -q --bare /opt/src /opt/origin.git
for p in \$(seq 1 $PKGS); do
  t=/tmp/pkg/package; rm -rf /tmp/pkg; mkdir -p \$t/lib
  printf '{\"name\":\"pkg-%d\",\"version\":\"1.0.0\",\"main\":\"index.js\"}\n' \$p > \$t/package.json
  echo \"module.exports = require('./lib/f1.js');\" > \$t/index.js
  for f in \$(seq 1 $((FILES_PER_PKG - 2))); do head -c \$((200 + (p * f) % 3000)) /dev/urandom | base64 > \$t/lib/f\$f.js; done
  tar czf /opt/pkgs/pkg-\$p.tgz -C /tmp/pkg package
done"
HAVE_NPM=1
b exec a -- sh -c 'command -v npm' >/dev/null 2>&1 || HAVE_NPM=0

redo_npm='set -e; rm -rf /workspace/app; git clone -q /opt/origin.git /workspace/app; cd /workspace/app; echo "{\"name\":\"app\",\"version\":\"1.0.0\"}" > package.json; HOME=/tmp npm install --offline --no-audit --no-fund --ignore-scripts --loglevel=error /opt/pkgs/*.tgz >/dev/null'
redo_tar='set -e; rm -rf /workspace/app; git clone -q /opt/origin.git /workspace/app; cd /workspace/app; for f in /opt/pkgs/*.tgz; do n=$(basename "$f" .tgz); mkdir -p node_modules/$n; tar xzf "$f" -C node_modules/$n --strip-components=1; done'

# The workspace to back up: cloned and installed once.
if [ "$HAVE_NPM" = 1 ]; then in_a "$redo_npm"; else in_a "$redo_tar"; fi
files=$(b exec a -- sh -c 'find /workspace/app | wc -l')
size=$(b exec a -- sh -c 'du -sk /workspace/app | cut -f1')
t0=$(now_ms)
id=$(b backup a /workspace/app --json 2>/dev/null | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')
backup_ms=$(( $(now_ms) - t0 ))
archive=$(b backup ls --json | sed -n 's/.*"size_bytes": *\([0-9]*\).*/\1/p' | head -1)

declare -a R_NPM R_TAR R_RESTORE
for i in $(seq 1 "$ROUNDS"); do
  if [ "$HAVE_NPM" = 1 ]; then
    t0=$(now_ms); in_a "$redo_npm"; R_NPM+=($(( $(now_ms) - t0 )))
  fi
  t0=$(now_ms); in_a "$redo_tar"; R_TAR+=($(( $(now_ms) - t0 )))
  t0=$(now_ms); b restore-backup "$id" b /workspace/app >/dev/null 2>&1; R_RESTORE+=($(( $(now_ms) - t0 )))
done
check=$(b exec b -- sh -c 'cd /workspace/app && git status --porcelain --untracked-files=no | wc -l && find . | wc -l')

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo
echo "workspace: $files entries, $((size / 1024)) MiB on disk; archive $((archive / 1024)) KiB; restored tree: $(echo $check | tr '\n' ' ') (changed tracked files, entries)"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg); rounds: $ROUNDS"
echo
echo "| operation | median | samples (ms) |"
echo "|---|---|---|"
echo "| backup (once): archive in the sandbox → blob store | ${backup_ms} ms | 1 |"
echo "| **restore-backup** into another sandbox (verify sha256, unpack, swap in) | **$(median "${R_RESTORE[@]}") ms** | ${R_RESTORE[*]} |"
if [ "$HAVE_NPM" = 1 ]; then
  echo "| redo: git clone + npm install --offline (local tarballs) | $(median "${R_NPM[@]}") ms | ${R_NPM[*]} |"
fi
echo "| redo: git clone + tar x of every package (install floor) | $(median "${R_TAR[@]}") ms | ${R_TAR[*]} |"
