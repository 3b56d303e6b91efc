#!/usr/bin/env bash
# Worker throughput benchmark. Prints figures; asserts nothing (machines here are shared and
# noisy: compare the ratios printed, measured in the same run on the same data).
#
#   scripts/bench-worker.sh            # 5,000 x 4 KiB + 8 x 64 MiB, RSS at 5,000 and 50,000 objects
#   SMALL=2000 RSS_LARGE=20000 REPS=1 scripts/bench-worker.sh   # smaller run
#
# Ceiling, ferry and rclone are measured REPS times in turn (each into a fresh bucket) and the
# ratios are taken between medians: on a shared machine one round can be off by 15%.
#
# S3 is s3s-fs 0.14.1 (a fast local S3 server) with its data on tmpfs (/dev/shm); moto serves
# only the job store (DynamoDB). ferry, rclone and `aws s3 cp` each copy into a fresh bucket.
# The ceiling is the server's own limit: CopyObject (or UploadPartCopy) of keys known in advance.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
SMALL="${SMALL:-5000}"; LARGE="${LARGE:-8}"; LARGE_MIB="${LARGE_MIB:-64}"; RSS_LARGE="${RSS_LARGE:-50000}"
REPS="${REPS:-3}"   # rounds of ceiling, ferry and rclone (aws-cli, ~40 s a round, runs once)

# --- tools -------------------------------------------------------------------------------------
command -v s3s-fs >/dev/null || cargo install s3s-fs@0.14.1 --features binary --locked
command -v rclone >/dev/null || { apt-get update -qq && apt-get install -y -qq rclone; }
[ -x .venv-bench/bin/aws ] || { python3 -m venv .venv-bench && .venv-bench/bin/pip install -q awscli; }
scripts/emulator.sh install
cargo build --release --locked --quiet --bin ferry
cargo bench --locked --no-run --bench ceiling 2>/dev/null
ceiling_bin="$(ls -t target/release/deps/ceiling-* | grep -v '\.d$' | head -1)"
ferry="$root/target/release/ferry"

# --- servers -----------------------------------------------------------------------------------
work="$(mktemp -d /dev/shm/ferry-bench.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
s3port="$(port)"; mport="$(port)"
mkdir -p "$work/s3"
s3s-fs --host 127.0.0.1 --port "$s3port" --access-key test --secret-key testtesttest "$work/s3" >"$work/s3s.log" 2>&1 &
pids+=($!)
scripts/emulator.sh serve "$mport" >"$work/moto.log" 2>&1 &
pids+=($!)
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=testtesttest AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export AWS_ENDPOINT_URL="http://127.0.0.1:$mport" AWS_ENDPOINT_URL_S3="http://127.0.0.1:$s3port" FERRY_TABLE=bench
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$mport/moto-api/" && curl -s -o /dev/null "http://127.0.0.1:$s3port/" && break
  sleep 0.1
done
s3="http://127.0.0.1:$s3port"
cat >"$work/rclone.conf" <<CONF
[s3]
type = s3
provider = Other
access_key_id = test
secret_access_key = testtesttest
endpoint = $s3
force_path_style = true
CONF
rc() { env -u AWS_CA_BUNDLE rclone --config "$work/rclone.conf" "$@"; }
awscli() { env -u AWS_ENDPOINT_URL -u AWS_ENDPOINT_URL_S3 "$root/.venv-bench/bin/aws" --endpoint-url "$s3" "$@"; }
"$ferry" init >/dev/null

# --- data --------------------------------------------------------------------------------------
seed_dir() { # DIR COUNT SIZE_BYTES
  python3 - "$@" <<'PY'
import os, sys
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(d, exist_ok=True)
block = os.urandom(size)
for i in range(n):
    sub = os.path.join(d, f"p{i % 16:02d}")
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"obj-{i:06d}"), "wb") as f:
        f.write(block)
PY
}
keys_file() { # BUCKET OUT
  (cd "$work/s3/$1" && find . -type f | sed 's|^\./||' | while read -r k; do printf '%s\t%s\n' "$k" "$(stat -c %s "$k")"; done) >"$2"
}
echo "seeding $SMALL x 4 KiB and $LARGE x $LARGE_MIB MiB ..."
seed_dir "$work/small" "$SMALL" 4096
seed_dir "$work/large" "$LARGE" $((LARGE_MIB * 1024 * 1024))
for b in small large; do rc mkdir "s3:src-$b"; rc copy --transfers 32 "$work/$b" "s3:src-$b"; done
rm -rf "$work/small" "$work/large"
keys_file src-small "$work/small.keys"; keys_file src-large "$work/large.keys"

job() { # NAME SRC DST
  cat >"$work/$1.yaml" <<YAML
apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {name: $1}
spec:
  source: {account: "111111111111", region: us-east-1, bucket: $2, roleArn: "arn:aws:iam::111111111111:role/s"}
  destination: {account: "222222222222", region: us-east-1, bucket: $3, roleArn: "arn:aws:iam::222222222222:role/d"}
YAML
  "$ferry" apply -f "$work/$1.yaml" >/dev/null
}
now() { date +%s.%N; }
rate() { python3 -c "import sys; n,b,t=map(float,sys.argv[1:]); print(f'{n/t:9.1f} obj/s {b/1048576/t:9.1f} MiB/s  ({t:.2f} s)')" "$@"; }
bytes_of() { awk -F'\t' '{s+=$2} END {print s+0}' "$1"; }
declare -A secs
measure() { # LABEL SET COUNT BYTES -- command...   (appends the seconds to secs[SET/LABEL])
  local label="$1" set="$2" n="$3" b="$4"; shift 5
  local t0 t1 t; t0=$(now); "$@" >"$work/$label.out" 2>&1 || { echo "$label failed:"; tail -5 "$work/$label.out"; }; t1=$(now)
  t=$(python3 -c "print($t1-$t0)")
  secs["$set/$label"]="${secs[$set/$label]:-} $t"
  printf '%-8s %-10s %s\n' "$set" "$label" "$(rate "$n" "$b" "$t")"
}
# shellcheck disable=SC2086 # the list of seconds is split on purpose
median() { python3 -c "import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))" $1; }
ferry_worker() { # JOB
  FERRY_JOB="$1" FERRY_RUN=bench FERRY_TASK=bench FERRY_S3_FORCE_PATH_STYLE=true FERRY_ASSUME_DESTINATION_ROLE=false \
    FERRY_LOG=warn /usr/bin/time -f '%M' -o "$work/$1.rss" "$ferry" worker
}

for set in small large; do
  n=$(wc -l <"$work/$set.keys"); b=$(bytes_of "$work/$set.keys")
  for r in $(seq "$REPS"); do
    for d in ceil ferry rclone; do rc mkdir "s3:$d-$set-$r"; done
    if [ "$set" = small ]; then
      measure ceiling "$set" "$n" "$b" -- "$ceiling_bin" "$s3" "src-$set" "ceil-$set-$r" "$work/$set.keys" copy 64
    else
      measure ceiling "$set" "$n" "$b" -- "$ceiling_bin" "$s3" "src-$set" "ceil-$set-$r" "$work/$set.keys" multipart:16 8
    fi
    job "bench-$set-$r" "src-$set" "ferry-$set-$r"
    measure ferry "$set" "$n" "$b" -- ferry_worker "bench-$set-$r"
    got=$(find "$work/s3/ferry-$set-$r" -type f | wc -l)
    [ "$got" -eq "$n" ] || echo "WARNING: ferry copied $got of $n objects"
    measure rclone "$set" "$n" "$b" -- rc copy --transfers 64 --checkers 64 "s3:src-$set" "s3:rclone-$set-$r"
  done
  rc mkdir "s3:awscli-$set"
  measure awscli "$set" "$n" "$b" -- awscli s3 cp --recursive --quiet "s3://src-$set" "s3://awscli-$set"
  for label in ceiling ferry rclone awscli; do
    printf '%-8s %-10s %s\n' "$set" "median" "$(rate "$n" "$b" "$(median "${secs[$set/$label]}")")  $label"
  done
  python3 - "$set" "$(median "${secs[$set/ferry]}")" "$(median "${secs[$set/rclone]}")" \
    "$(median "${secs[$set/awscli]}")" "$(median "${secs[$set/ceiling]}")" "$REPS" <<'PY'
import sys
s, f, r, a, c, reps = sys.argv[1], *map(float, sys.argv[2:])
print(f"{s:8s} ratios   ferry/rclone {r/f:.2f}x   ferry/awscli {a/f:.2f}x   ferry/fastest-peer {min(r,a)/f:.2f}x   ferry/ceiling {c/f:.0%}   (medians of {reps:.0f} rounds)")
PY
  peak=$(cat "$work"/bench-"$set"-*.rss | sort -n | tail -1)
  echo "$set     ferry peak RSS $(( peak / 1024 )) MiB"
done

# --- memory against object count ----------------------------------------------------------------
echo "RSS: seeding $RSS_LARGE x 1 byte ..."
seed_dir "$work/many" "$RSS_LARGE" 1
rc mkdir s3:src-many; rc copy --transfers 32 "$work/many" s3:src-many; rm -rf "$work/many"
for n in "$SMALL" "$RSS_LARGE"; do
  rc mkdir "s3:rss-$n"
  if [ "$n" = "$RSS_LARGE" ]; then src=src-many; else src=src-small; fi
  job "rss-$n" "$src" "rss-$n"
  ferry_worker "rss-$n" >/dev/null 2>&1
  echo "RSS      $n objects: ferry peak RSS $(( $(cat "$work/rss-$n.rss") / 1024 )) MiB"
done
