#!/usr/bin/env bash
# Interpreter contexts: creation and warm `1+1` round trip per language, through a real daemon
# (needs root). BENCH_N=… sets the number of round trips. Results: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -p bothy --bench interp
