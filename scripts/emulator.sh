#!/usr/bin/env bash
# The AWS emulator for ferry's tests and quick start: moto server in .venv/.
#
#   scripts/emulator.sh install          create .venv/ with moto (and cfn-lint, parliament for the
#                                        deployment tests) if it is missing (idempotent)
#   scripts/emulator.sh start [PORT]     start moto on 127.0.0.1:PORT (default: a free port) in the
#                                        background; prints the endpoint URL; pid in .ferry/moto.pid
#   scripts/emulator.sh stop             stop the server started by `start`
#   scripts/emulator.sh serve PORT [--single-threaded] [--lenient]
#                                        run in the foreground (the Rust test harness uses this);
#                                        --single-threaded serializes every request; only needed
#                                        with --lenient, since the strict layer already runs
#                                        DynamoDB requests one at a time (atomic conditional
#                                        writes, as on AWS) and the rest concurrently
#
# Every request passes through ferry's strict AWS layer (scripts/strict_aws/: AWS rules moto
# does not enforce, each citing its AWS page) unless --lenient is given; `GET /ferry-strict/rules`
# lists the rules and how often each refused a request.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
moto_spec='moto[s3,dynamodb,dynamodbstreams,ec2,ecs,iam,sts]==5.2.5'
# Linters the tests run on the deployment template and IAM policies.
lint_specs=(cfn-lint==1.58.0 parliament==1.6.4)

install() {
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import moto, flask, flask_cors, boto3, cfnlint, parliament' 2>/dev/null; then
    return 0
  fi
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$moto_spec" flask flask-cors "${lint_specs[@]}"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

serve() {
  local port="$1"; shift
  local threaded=True strict=True
  for arg in "$@"; do
    case "$arg" in
      --single-threaded) threaded=False ;;
      --lenient) strict=False ;;
      *) echo "serve: unknown option $arg" >&2; exit 2 ;;
    esac
  done
  exec "$venv/bin/python" - "$port" "$threaded" "$strict" "$root/scripts" <<'PY'
import os, sys, threading, time
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
port = int(sys.argv[1]); threaded = sys.argv[2] == "True"; strict = sys.argv[3] == "True"
app = DomainDispatcherApplication(create_backend_app)
if strict:
    sys.path.insert(0, sys.argv[4])
    from strict_aws import StrictAws
    app = StrictAws(app)
parent = os.getppid()
def watch_parent():
    # Exit when whoever started us is gone, so a killed test run leaves no server behind.
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)
if os.environ.get("FERRY_EMULATOR_EXIT_WITH_PARENT") == "1":
    threading.Thread(target=watch_parent, daemon=True).start()
run_simple("127.0.0.1", port, app, threaded=threaded, use_reloader=False)
PY
}

wait_ready() {
  local url="$1"
  for _ in $(seq 1 200); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1]+'/moto-api/', timeout=1)" "$url" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "emulator did not answer at $url" >&2
  return 1
}

case "${1:-}" in
  install) install ;;
  serve) shift; install; serve "$@" ;;
  start)
    install
    port="${2:-$(free_port)}"
    mkdir -p "$root/.ferry"
    nohup "$0" serve "$port" >"$root/.ferry/moto.log" 2>&1 &
    echo $! >"$root/.ferry/moto.pid"
    wait_ready "http://127.0.0.1:$port"
    echo "http://127.0.0.1:$port"
    ;;
  stop)
    if [ -f "$root/.ferry/moto.pid" ]; then
      kill "$(cat "$root/.ferry/moto.pid")" 2>/dev/null || true
      rm -f "$root/.ferry/moto.pid"
    fi
    ;;
  *) sed -n '2,17p' "$0"; exit 2 ;;
esac
