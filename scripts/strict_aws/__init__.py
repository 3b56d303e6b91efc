"""ferry's strict AWS layer: AWS rules that moto does not enforce, checked in front of moto.

moto accepts much that AWS refuses. This module wraps moto's WSGI application: every request
that reaches the emulator passes through `StrictAws` first, and each rule below either lets it
through or answers exactly as AWS does (status, error code, headers). Rules read moto's own
state (which account owns a bucket, its region, its Object Ownership, an object's ETag and
encryption), so they judge a request as AWS would judge it against the same resources.

Every rule is a small function registered with `@rule(name, url)`; the URL is the AWS page the
rule comes from. All rules are on by default (`scripts/emulator.sh serve`); a test switches one
off only to show what it catches:

    GET  /ferry-strict/rules                  {name: {"enabled", "aws", "doc", "rejected"}}
    GET  /ferry-strict/permissions            {role ARN: [S3 actions its requests were allowed]}
    GET  /ferry-strict/sessions               {session ARN: its session policy or null}
    GET  /ferry-strict/requests               every request since the last reset, oldest
                                              first: {"time", "service", "operation",
                                              "write", "key" (a DynamoDB write's pk, an S3 object's key),
                                              "bucket" (S3)} (the last 20,000)
    POST /ferry-strict/deny   {"deny": [{"principal": P, "action": "ecs:ListTasks"}]}
                                              explicit denies (P: a role ARN, an account root
                                              ARN, `accesskey:ID` or `*`); [] lifts them
    POST /ferry-strict/rules  {"off": [name], "on": [name]}
    POST /ferry-strict/ecs    {"describeLagMs": N, "placementFailures": K, "placementReason": R,
                               "stoppedTaskRetentionSeconds": S}
                                              ECS faults moto never produces, and how long a
                                              stopped task stays known (see ecs.py)
    POST /ferry-strict/s3     {"writesPerSecond": N, "readsPerSecond": M}
                                              a bucket's request grant before SlowDown
                                              (s3.py, s3-prefix-request-rate)
    POST /ferry-strict/reset                  every rule on, counters and token memory cleared

`rejected` counts the requests each rule refused, so a test can prove a rule fired.

S3 requests are read path-style (`/bucket/key`), as ferry's emulator clients send them. The
region of a request is the region of its SigV4 credential scope.

Files: `core.py` (the registry, requests, AWS-shaped errors, moto lookups), `lookups.py` (moto's
role and session lookups, indexed so that they do not scan every role and session per request),
`s3.py`, `iam.py` (permissions and denies), `ecs.py` (the rules), `dynamodb.py` (atomic
conditional writes), and this one (the middleware and its control endpoints).
"""


import io
import json
import time
import urllib.parse

from . import s3, iam, ecs, dynamodb  # noqa: F401  (registers the rules, in this order)
from . import lookups
from .core import LOCK, RULES, Request, enabled, parse, sessions
from .ecs import (AGENT_TASKS, FAULTS, RUN_TASK_TOKENS, STOPPED_AT, STOPPING, TASK_STARTED, describe_tasks, params_digest,
                  placement_failure, propagated_body, set_faults, stop_requested, submit_task_state_change, tasks_started)
from .ecs import serialized as ecs_serialized
from .iam import DENY_LIST, USED_ACTIONS
from .s3 import UPLOAD_INITIATORS, name_initiators, record_initiator, set_rates

# ---------------------------------------------------------------------------------------------
# The request log: what reached the emulator and when, so a test can tell which calls a
# process made after a given moment (a frozen operator's, after it resumes) by the server's
# clock rather than the process's own account.

REQUESTS: list = []
MAX_REQUESTS = 20_000
READS = ("Get", "List", "Describe", "Head", "Query", "Scan", "BatchGet", "AssumeRole")


def log_request(req: Request) -> None:
    if req.service == "s3":
        operation = f"{req.method} {'object' if req.key() else 'bucket'} {'&'.join(sorted(req.query))}".strip()
        write = req.method in ("PUT", "POST", "DELETE")
    else:
        operation = req.target()
        if not operation:
            form = urllib.parse.parse_qs(req.body().decode("utf-8", "replace")) if req.method == "POST" else {}
            operation = (form.get("Action") or req.query.get("Action") or [""])[0]
        write = not operation.startswith(READS)
    key = req.key() if req.service == "s3" else ""
    if req.service == "dynamodb" and write:
        item = req.json().get("Key") or req.json().get("Item") or {}
        key = (item.get("pk") or {}).get("S", "")
    bucket = req.bucket() if req.service == "s3" else ""
    entry = {"time": time.time(), "service": req.service, "operation": operation, "write": write, "key": key, "bucket": bucket}
    with LOCK:
        REQUESTS.append(entry)
        if len(REQUESTS) > MAX_REQUESTS:
            del REQUESTS[: len(REQUESTS) - MAX_REQUESTS]


# ---------------------------------------------------------------------------------------------
# The middleware


class StrictAws:
    """WSGI middleware: the rules, then moto."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/ferry-strict/"):
            return self.control(environ, start_response)
        if path == "/moto-api/reset" and environ.get("REQUEST_METHOD") == "POST":
            with LOCK:
                RUN_TASK_TOKENS.clear()
            lookups.reset()
        req = parse(environ)
        log_request(req)
        for r in list(RULES.values()):
            answer = r.check(req) if r.enabled else None
            if answer is None:
                continue
            status, headers, body = answer
            if not status.startswith("200"):  # a 200 is an idempotent replay, not a rejection
                with LOCK:
                    r.rejected += 1
            start_response(status, headers + [("Content-Length", str(len(body)))])
            return [body]
        if req.service == "ecs":
            return ecs_serialized(lambda e, sr: self.ecs(req, e, sr), environ, start_response)
        if enabled("s3-multipart-initiator") and req.service == "s3" and "uploads" in req.query:
            if req.method == "POST" and req.key():
                return self.rewrite(environ, start_response, lambda st, b: record_initiator(req, st, b))
            if req.method == "GET" and not req.key():
                return self.rewrite(environ, start_response, lambda st, b: name_initiators(req, st, b))
        if req.service == "dynamodb":
            return dynamodb.serialized(self.app, environ, start_response)
        return self.app(environ, start_response)

    def ecs(self, req: Request, environ, start_response):
        """An ECS request the rules let through (run under ECS_LOCK)."""
        if req.target() == "SubmitTaskStateChange":
            status, headers, body = submit_task_state_change(req)
            start_response(status, headers + [("Content-Length", str(len(body)))])
            return [body]
        if req.target() == "StopTask":
            req.body()  # read before moto consumes the input
            return self.rewrite(environ, start_response, lambda st, b: stop_requested(req, st, b))
        if req.target() == "DescribeTasks":
            req.body()  # read before moto consumes the input
            return self.rewrite(environ, start_response, lambda st, b: describe_tasks(req, st, b))
        if req.target() == "RunTask":
            failed = placement_failure(req)
            if failed is not None:
                status, headers, body = failed
                start_response(status, headers + [("Content-Length", str(len(body)))])
                return [body]
            propagated = propagated_body(req)
            if propagated is not None:
                environ["wsgi.input"] = io.BytesIO(propagated)
                environ["CONTENT_LENGTH"] = str(len(propagated))
        if req.target() == "RunTask" and req.json().get("clientToken"):
            return self.remember_run_task(req, environ, start_response)
        return self.app(environ, start_response)

    def rewrite(self, environ, start_response, transform):
        """Runs moto, then `transform(status, body)` over its whole answer."""
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        body = b"".join(self.app(environ, capture))
        body = transform(captured["status"], body)
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        start_response(captured["status"], headers + [("Content-Length", str(len(body)))])
        return [body]

    def remember_run_task(self, req: Request, environ, start_response):
        """Keeps RunTask's answer under its clientToken, so that a retry with the same token and
        parameters returns the same tasks instead of starting more (RunTask: clientToken)."""
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"] = status
            return start_response(status, headers, exc_info)

        body = b"".join(self.app(environ, capture))
        if captured.get("status", "").startswith("200"):
            tasks_started(body)
        if captured.get("status", "").startswith("200") and enabled("ecs-client-token"):
            with LOCK:
                RUN_TASK_TOKENS[req.json()["clientToken"]] = (params_digest(req.json()), body)
        return [body]

    def control(self, environ, start_response):
        method = environ.get("REQUEST_METHOD")
        path = environ.get("PATH_INFO")
        if method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            data = environ["wsgi.input"].read(length) if length else b""
            with LOCK:
                if path == "/ferry-strict/reset":
                    for r in RULES.values():
                        r.enabled, r.rejected = True, 0
                    RUN_TASK_TOKENS.clear()
                    UPLOAD_INITIATORS.clear()
                    USED_ACTIONS.clear()
                    DENY_LIST.clear()
                    REQUESTS.clear()
                    AGENT_TASKS.clear()
                    STOPPING.clear()
                    TASK_STARTED.clear()
                    STOPPED_AT.clear()
                    set_faults({"describeLagMs": 0, "placementFailures": 0, "placementReason": "RESOURCE:ENI",
                                "stoppedTaskRetentionSeconds": 3600})
                elif path in ("/ferry-strict/ecs", "/ferry-strict/s3"):
                    pass  # below, outside the lock
                elif path == "/ferry-strict/deny":
                    DENY_LIST[:] = json.loads(data or b"{}").get("deny", [])
                elif path == "/ferry-strict/rules":
                    change = json.loads(data or b"{}")
                    unknown = [n for n in change.get("off", []) + change.get("on", []) if n not in RULES]
                    if unknown:
                        body = json.dumps({"error": f"unknown rules {unknown}", "rules": sorted(RULES)}).encode()
                        start_response("400 Bad Request", [("Content-Type", "application/json")])
                        return [body]
                    for n in change.get("off", []):
                        RULES[n].enabled = False
                    for n in change.get("on", []):
                        RULES[n].enabled = True
        if method == "POST" and path == "/ferry-strict/ecs":
            set_faults(json.loads(data or b"{}"))
        if method == "POST" and path == "/ferry-strict/reset":
            set_rates({"reset": True})
        if path == "/ferry-strict/s3":
            body = json.dumps(set_rates(json.loads(data or b"{}") if method == "POST" else {})).encode()
        elif path == "/ferry-strict/ecs":
            with LOCK:
                body = json.dumps(FAULTS).encode()
        elif path == "/ferry-strict/permissions":
            body = json.dumps({role: sorted(a) for role, a in USED_ACTIONS.items()}, indent=1).encode()
        elif path == "/ferry-strict/requests":
            with LOCK:
                body = json.dumps(list(REQUESTS)).encode()
        elif path == "/ferry-strict/sessions":
            body = json.dumps(sessions(), indent=1).encode()
        else:
            body = json.dumps(
                {r.name: {"enabled": r.enabled, "aws": r.aws, "doc": r.doc, "rejected": r.rejected}
                 for r in RULES.values()},
                indent=1,
            ).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

