#!/usr/bin/env bash
# Runs every test. Installs what the tests need first, each only if missing: Python's venv
# module and Debian's prometheus package (apt-get; as root, or with sudo), and moto with the
# linters in .venv/ (scripts/emulator.sh install), and cargo-deny, which checks licences and
# duplicate crate versions (deny.toml). Then `cargo test --locked ARGS`.
# Tests start their own moto servers (behind ferry's strict AWS layer) on free loopback ports.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

apt_install() {
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "test.sh: need root or sudo to apt-get install $*" >&2; exit 1; }
    sudo=sudo
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

# Python venv support for the emulator (.venv/ with moto).
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  apt_install python3-venv
fi
# A real Prometheus (and promtool) for the observability test; not started as a service.
if ! command -v prometheus >/dev/null; then
  apt_install prometheus
fi
scripts/emulator.sh install
# Licences and duplicate major versions (deny.toml). The advisory database cannot be fetched on
# these machines, so only `licenses` and `bans` are checked, offline.
if ! cargo deny --version 2>/dev/null | grep -q "^cargo-deny 0.20"; then
  cargo install cargo-deny --locked --version 0.20.2
fi
cargo deny --offline --locked check licenses bans
exec cargo test --locked "$@"
