#!/usr/bin/env bash
# The quick start: builds ferry, starts the AWS emulator (moto) on a free loopback port, creates
# ferry's table, applies examples/ and shows the jobs. Everything stays on 127.0.0.1 and stops
# when the script ends.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cargo build --locked --quiet
scripts/emulator.sh install
endpoint="$(scripts/emulator.sh start)"
trap 'scripts/emulator.sh stop' EXIT
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="$endpoint" AWS_EC2_METADATA_DISABLED=true FERRY_TABLE=ferry
ferry=target/debug/ferry
echo "== emulator at $endpoint"
echo "== ferry init";               $ferry init
echo "== ferry validate -f examples/"; $ferry validate -f examples/
echo "== ferry apply -f examples/";  $ferry apply -f examples/
echo "== ferry apply -f examples/ (again: nothing changes)"; $ferry apply -f examples/
echo "== ferry get -o wide";         $ferry get -o wide
echo "== ferry describe logs-migration"; $ferry describe logs-migration
