#!/usr/bin/env bash
# Operator benchmark: N jobs (default 1,000) at steady state on the emulator; prints AWS calls per
# job per resync pass, the operator's peak RSS and apply -> RunTask latency. Extra arguments go to
# scripts/bench-operator.py (e.g. --jobs 200).
#
# The binary is built with the `fast` profile (optimized like the shipped release binary, without
# whole-program LTO), so memory and CPU figures are those of an optimized operator.
#
# TABLE=fakecloud puts ferry's table (DynamoDB and its stream) on fakecloud instead of moto:
# moto serves about 100 requests/s and slows as the table grows, which caps this benchmark near
# 1,000 jobs. fakecloud (AGPL; a benchmark tool only, never linked into ferry) is installed
# into .bench/fakecloud with `cargo install` the first time (about 40 minutes on 2 cores), or
# taken from FAKECLOUD_BIN. Everything else (S3, IAM, STS, ECS) stays on moto.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cargo build --locked --quiet --profile fast --bin ferry
scripts/emulator.sh install
bin="$(mktemp -d)"
fc_pid=""
cleanup() {
  scripts/emulator.sh stop
  [ -n "$fc_pid" ] && kill "$fc_pid" 2>/dev/null
  rm -rf "$bin"
}
trap cleanup EXIT
endpoint="$(scripts/emulator.sh start)"
table="${TABLE:-moto}"
case "$table" in
  moto) ;;
  fakecloud)
    fc="${FAKECLOUD_BIN:-$root/.bench/fakecloud/bin/fakecloud}"
    if [ ! -x "$fc" ]; then
      cargo install fakecloud --version 0.51.0 --locked --root "$root/.bench/fakecloud"
    fi
    port="$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    FAKECLOUD_LOG=warn "$fc" --addr "127.0.0.1:$port" > "$bin/fakecloud.log" 2>&1 &
    fc_pid=$!
    for _ in $(seq 100); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      sleep 0.1
    done
    export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$port"
    export AWS_ENDPOINT_URL_DYNAMODB_STREAMS="http://127.0.0.1:$port"
    export BENCH_FAKECLOUD_PID="$fc_pid"
    ;;
  *) echo "TABLE must be moto or fakecloud, not $table" >&2; exit 2 ;;
esac
# A copy of the binary, so rebuilding during the run does not swap it under the workers.
cp target/fast/ferry "$bin/ferry"
export FERRY_BIN="$bin/ferry" BENCH_TABLE="$table" BENCH_PROFILE=fast
.venv/bin/python scripts/bench-operator.py --endpoint "$endpoint" "$@"
