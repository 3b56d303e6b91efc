#!/usr/bin/env bash
# Operator benchmark: 1,000 jobs at steady state on the emulator; prints AWS calls per job per
# resync pass, the operator's peak RSS and apply -> RunTask latency. Takes about 10 minutes.
# Extra arguments go to scripts/bench-operator.py (e.g. --jobs 200).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cargo build --locked --quiet
scripts/emulator.sh install
endpoint="$(scripts/emulator.sh start)"
bin="$(mktemp -d)"
trap 'scripts/emulator.sh stop; rm -rf "$bin"' EXIT
# A copy of the binary, so rebuilding during the run does not swap it under the workers.
cp target/debug/ferry "$bin/ferry"
export FERRY_BIN="$bin/ferry"
.venv/bin/python scripts/bench-operator.py --endpoint "$endpoint" "$@"
