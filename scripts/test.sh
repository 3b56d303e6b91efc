#!/usr/bin/env bash
# Runs every test: installs the emulator into .venv/ if missing, then `cargo test --locked`.
# Tests start their own moto servers on free loopback ports and stop them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/emulator.sh install
exec cargo test --locked "$@"
