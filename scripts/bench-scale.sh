#!/usr/bin/env bash
# Scale benchmark: one job over a bucket of generated keys on tools/vs3 (a virtual S3 server:
# no data, copies recorded in a bitmap, latency in sleeps, S3's per-prefix request budget with
# 503 SlowDown), its run shared by N = 1, 2, 4, 8 `ferry worker` processes. The job store is
# moto (DynamoDB) behind the strict layer. Prints figures; asserts nothing (these machines are
# shared and noisy: compare the ratios, measured in the same run).
#
#   scripts/bench-scale.sh                       # the figures in the README (about 20 minutes)
#   KEYS=1000000 WINDOW=20 scripts/bench-scale.sh   # smaller
#   scripts/bench-scale.sh --rss                 # only the worker's peak RSS at 10^5 and KEYS keys
#   scripts/bench-scale.sh --storm               # only the SlowDown storm (FULL_KEYS keys, 4 tasks)
#   scripts/bench-scale.sh --inventory           # only runs read from an S3 Inventory report (CSV, Parquet)
#   FULL_KEYS=10000000 CONCURRENCY=32 scripts/bench-scale.sh --once
#                                                # only the complete run (4 tasks): exactly once,
#                                                # coordination and the tasks' RSS over the run
#   FULL_KEYS=10000000 CONCURRENCY=32 scripts/bench-scale.sh --kill
#                                                # only the complete run with one task SIGKILLed
#
# Environment: KEYS (flat bucket for planning and throughput, default 10^7), LATENCY_MS (20),
# CONCURRENCY (copies in flight per task, 8: one task then stays well under the prefix budget,
# so scaling shows), WINDOW (seconds of steady state measured per N, 30), TASKS ("1 2 4 8"),
# FULL_KEYS (keys of the complete runs: exactly-once, kill and SlowDown storm; 100000),
# INVENTORY_ROWS (rows of the report the --inventory runs read; 1000000), INVENTORY_FORMATS
# (the --inventory runs: "list csv parquet", list being the same keys listed, their peer).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
(cd tools/vs3 && cargo build --release --quiet)
cargo build --locked --quiet --profile fast --bin ferry
scripts/emulator.sh install
endpoint="$(scripts/emulator.sh start)"
trap 'scripts/emulator.sh stop' EXIT
.venv/bin/python scripts/bench-scale.py --endpoint "$endpoint" \
  --vs3 tools/vs3/target/release/vs3 --ferry target/fast/ferry "$@"
