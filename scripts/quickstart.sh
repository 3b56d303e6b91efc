#!/usr/bin/env bash
# The quick start: ferry's main job end to end on one machine. Builds ferry, starts the AWS
# emulator (moto, behind ferry's strict AWS layer) on a free loopback port, creates the two
# accounts' roles with exactly the permissions `ferry policies` prints and seeded source buckets
# in account 111111111111, applies examples/jobs/, runs the operator and the local Fargate agent
# until every job has finished its run, then prints `ferry get`, the throughput, the operator's
# metrics and what the strict layer refused. Everything binds to 127.0.0.1 and stops when the script ends.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cargo build --locked --quiet
scripts/emulator.sh install
endpoint="$(scripts/emulator.sh start)"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/emulator.sh stop
}
trap cleanup EXIT
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="$endpoint" AWS_EC2_METADATA_DISABLED=true FERRY_TABLE=ferry
ferry=target/debug/ferry
local_aws() { .venv/bin/python scripts/local-aws.py --endpoint "$endpoint" "$@"; }

echo "== emulator at $endpoint"
echo "== accounts: roles, seeded source buckets (account 111111111111), network"
local_aws ecs-manual
local_aws boundary
local_aws roles
local_aws seed --account 111111111111 --region eu-west-1 --bucket acme-logs-eu --prefix logs/ --count 400 --size 4096
local_aws seed --account 111111111111 --region us-west-2 --bucket acme-assets --prefix public/ --count 100 --size 2048
local_aws seed --account 111111111111 --region us-east-1 --bucket acme-backups --prefix daily/ --count 50 --size 8192
# assets-nightly-sync copies into an existing bucket (no destination.create) and writes a report.
local_aws bucket --account 222222222222 --region us-east-1 --bucket acme-assets-mirror
local_aws bucket --account 222222222222 --region us-east-1 --bucket acme-ferry-reports
net="$(local_aws network)"
subnet="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["subnet"])' "$net")"
group="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["securityGroup"])' "$net")"

echo "== roles get exactly the permissions \`ferry policies -f examples/jobs/\` prints"
$ferry policies -f examples/jobs/ >"$work/policies.json"
local_aws role-policies --policies "$work/policies.json"

echo "== ferry init";                  $ferry init
echo "== ferry validate -f examples/jobs/"; $ferry validate -f examples/jobs/
echo "== ferry apply -f examples/jobs/";    $ferry apply -f examples/jobs/

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
echo "== ferry local-agent (logs: $work/agent.log)"
$ferry local-agent --create-cluster >"$work/agent.log" 2>&1 &
pids+=($!)
echo "== ferry operator (metrics on http://127.0.0.1:$port/metrics, logs: $work/operator.log)"
echo "   --allow-any: local/emulator policy mode, every valid job is admitted. With real accounts"
echo "   the operator admits only what its --allow-* lists name (README, \"Security\")."
$ferry operator --listen "127.0.0.1:$port" --subnets "$subnet" --security-groups "$group" \
  --allow-any --s3-force-path-style --worker-env FERRY_S3_FORCE_PATH_STYLE=true \
  --resync-seconds 10 --task-poll-seconds 2 >"$work/operator.log" 2>&1 &
pids+=($!)

echo "== waiting for every job's run to finish"
deadline=$((SECONDS + 300))
while :; do
  phases="$($ferry get -o json | python3 -c '
import json, sys
jobs = json.load(sys.stdin)
jobs = jobs.get("items", jobs) if isinstance(jobs, dict) else jobs
print(" ".join(j["metadata"]["name"] + "=" + (j.get("status") or {}).get("phase", "Pending") for j in jobs))')"
  echo "   $phases"
  if ! grep -qE '=(Pending|Provisioning|Running)' <<<"$phases"; then break; fi
  if ((SECONDS > deadline)); then
    echo "jobs did not finish in time; operator log:"; tail -40 "$work/operator.log"; exit 1
  fi
  sleep 3
done

echo "== ferry get -o wide"; $ferry get -o wide
echo "== ferry describe logs-migration"; $ferry describe logs-migration
echo "== throughput"
$ferry get -o json | python3 -c '
import json, sys
from datetime import datetime
jobs = json.load(sys.stdin)
jobs = jobs.get("items", jobs) if isinstance(jobs, dict) else jobs
for j in jobs:
    s = j.get("status") or {}
    run, p = s.get("run") or {}, s.get("progress") or {}
    if not run.get("finishedAt"):
        continue
    secs = max((datetime.fromisoformat(run["finishedAt"].replace("Z", "+00:00")) -
                datetime.fromisoformat(run["startedAt"].replace("Z", "+00:00"))).total_seconds(), 1)
    name, objs, mib = j["metadata"]["name"], p.get("objectsCopied", 0), p.get("bytesCopied", 0) / 1048576
    print("   %s: %d objects, %.1f MiB in %.0f s = %.1f objects/s, %.2f MiB/s"
          % (name, objs, mib, secs, objs / secs, mib / secs))
print("   (moto, the emulator, is the bottleneck here: about 100 requests/s)")'
echo "== metrics (excerpt)"
python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' \
  "http://127.0.0.1:$port/metrics" | grep -E '^ferry_(copied_(bytes|objects)_total|job_phase\{.*\} 1|running_tasks|leader)' || true
echo "== the strict AWS layer (AWS rules moto does not enforce): requests each rule refused"
python3 -c '
import json, sys, urllib.request
rules = json.load(urllib.request.urlopen(sys.argv[1] + "/ferry-strict/rules"))
print("   " + ", ".join("%s %d" % (name, r["rejected"]) for name, r in rules.items()))' "$endpoint"
