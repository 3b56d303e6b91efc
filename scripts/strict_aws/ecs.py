"""ECS rules: RunTask/StartTask/ListTasks parameters and clientToken idempotency."""

import hashlib
import json
import re
import threading
import time
from typing import Optional

from .core import LOCK, Request, Response, behaviour, enabled, json_error, rule

# ---------------------------------------------------------------------------------------------
# ECS rules (RunTask, StartTask, ListTasks)

STARTED_BY = re.compile(r"^[A-Za-z0-9/_-]{0,36}$")


@rule("ecs-started-by", "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html")
def ecs_started_by(req: Request):
    """`startedBy` (RunTask, StartTask, and the ListTasks filter): "Up to 36 letters (uppercase
    and lowercase), numbers, hyphens (-), forward slash (/), and underscores (_) are allowed";
    otherwise InvalidParameterException."""
    if req.service != "ecs" or req.target() not in ("RunTask", "StartTask", "ListTasks"):
        return None
    started_by = req.json().get("startedBy")
    if started_by is not None and not STARTED_BY.match(started_by):
        return json_error("InvalidParameterException",
                          f"startedBy must be up to 36 letters, numbers, hyphens, forward slashes and underscores: {started_by!r}")
    return None


RUN_TASK_TOKENS: dict = {}


@rule("ecs-client-token", "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html")
def ecs_client_token(req: Request):
    """RunTask `clientToken`: up to 64 ASCII characters; the same token with other parameters
    answers ConflictException. (The same token with the same parameters is answered with the
    first call's tasks by `remember_run_task`.)"""
    if req.service != "ecs" or req.target() != "RunTask":
        return None
    body = req.json()
    token = body.get("clientToken")
    if token is None:
        return None
    if len(token) > 64 or not token.isascii():
        return json_error("InvalidParameterException", "clientToken must be up to 64 ASCII characters")
    seen = RUN_TASK_TOKENS.get(token)
    if seen is not None and seen[0] != params_digest(body):
        return json_error("ConflictException",
                          "The RunTask request could not be processed due to conflicts. The provided "
                          "clientToken is already in use with a different RunTask request.")
    if seen is not None:
        return "200 OK", [("Content-Type", "application/x-amz-json-1.1")], seen[1]
    return None


def params_digest(body: dict) -> str:
    rest = {k: v for k, v in body.items() if k != "clientToken"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


@rule("ecs-run-task-count", "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html")
def ecs_count(req: Request):
    """RunTask `count`: "You can specify up to 10 tasks for each call"; otherwise
    InvalidParameterException."""
    if req.service == "ecs" and req.target() == "RunTask":
        count = req.json().get("count", 1)
        if not isinstance(count, int) or not 1 <= count <= 10:
            return json_error("InvalidParameterException", "count must be between 1 and 10")
    return None


@rule("ecs-overrides-size", "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html")
def ecs_overrides(req: Request):
    """RunTask `overrides`: "A total of 8192 characters are allowed for overrides. This limit
    includes the JSON formatting characters of the override structure"."""
    if req.service == "ecs" and req.target() in ("RunTask", "StartTask"):
        overrides = req.json().get("overrides")
        if overrides is not None and len(json.dumps(overrides, separators=(",", ":"))) > 8192:
            return json_error("InvalidParameterException", "overrides exceed 8192 characters")
    return None


@rule("ecs-task-tags", "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Tag.html")
def ecs_tags(req: Request):
    """Task tags: at most 50, keys up to 128 and values up to 256 characters, no `aws:` prefix;
    otherwise InvalidParameterException."""
    if req.service != "ecs" or req.target() not in ("RunTask", "StartTask", "TagResource"):
        return None
    tags = req.json().get("tags") or []
    bad = len(tags) > 50 or any(
        len(t.get("key", "")) > 128 or len(t.get("value", "")) > 256 or t.get("key", "").lower().startswith("aws:")
        for t in tags
    )
    if bad:
        return json_error("InvalidParameterException", "tags: at most 50, keys <= 128, values <= 256, no aws: prefix")
    return None




# ---------------------------------------------------------------------------------------------
# Tag propagation: RunTask `propagateTags: TASK_DEFINITION` gives the task its task definition's
# tags; moto ignores the parameter.

behaviour(
    "ecs-propagate-tags",
    "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html",
    "RunTask `propagateTags`: \"Specifies whether to propagate the tags from the task definition "
    "to the task. If no value is specified, the tags aren't propagated.\" With TASK_DEFINITION "
    "the task carries the task definition's tags besides the request's own (the request's win "
    "on a shared key). moto ignores the parameter; the strict layer adds the tags to the request.",
)


def propagated_body(req: Request) -> Optional[bytes]:
    """The RunTask body with the task definition's tags added, if it asks for propagation."""
    if not enabled("ecs-propagate-tags"):
        return None
    doc = req.json()
    if doc.get("propagateTags") != "TASK_DEFINITION":
        return None
    from moto.ecs.models import ecs_backends

    wanted = doc.get("taskDefinition", "")
    for account in list(ecs_backends.keys()):
        backend = ecs_backends[account].get(req.region)
        if backend is None:
            continue
        try:
            td = backend.describe_task_definition(wanted)
        except Exception:  # not this account's
            continue
        own = {t.get("key") for t in doc.get("tags") or []}
        doc["tags"] = (doc.get("tags") or []) + [t for t in td.tags if t.get("key") not in own]
        return json.dumps(doc).encode()
    return None


# ---------------------------------------------------------------------------------------------
# Task lifecycle: a stopped task is not STOPPED until its container has exited.

behaviour(
    "ecs-stop-lifecycle",
    "https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-lifecycle-explanation.html",
    "StopTask sets desiredStatus STOPPED at once, but lastStatus passes through DEACTIVATING and "
    "STOPPING and reaches STOPPED only when the containers have exited (SIGTERM, then SIGKILL "
    "after stopTimeout). moto reports STOPPED at once. For tasks whose container a local agent "
    "runs (it reports RUNNING and STOPPED with SubmitTaskStateChange, the container agent's "
    "API: https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_SubmitTaskStateChange.html), "
    "DescribeTasks answers lastStatus STOPPING between StopTask and the agent's STOPPED.",
)

# Tasks whose container an agent reported RUNNING and not yet STOPPED, and those of them that
# someone asked to stop.
AGENT_TASKS: set = set()
STOPPING: set = set()


def submit_task_state_change(req: Request) -> Response:
    """The container agent's report: RUNNING (an agent runs the container) or STOPPED (it
    exited)."""
    body = req.json()
    task, status = body.get("task", ""), body.get("status", "")
    with LOCK:
        if status == "RUNNING":
            AGENT_TASKS.add(task)
        elif status == "STOPPED":
            AGENT_TASKS.discard(task)
            if task in STOPPING:
                STOPPED_AT[task] = time.time()
            STOPPING.discard(task)
    return "200 OK", [("Content-Type", "application/x-amz-json-1.1")], json.dumps({"acknowledgment": "ACK"}).encode()


def stop_requested(req: Request, status: str, body: bytes) -> bytes:
    """After moto answered a StopTask: if it accepted it, a task whose container still runs is
    STOPPING. Returns moto's answer unchanged."""
    task = req.json().get("task", "")
    with LOCK:
        if status.startswith("200") and enabled("ecs-stop-lifecycle") and task in AGENT_TASKS:
            STOPPING.add(task)
        elif status.startswith("200"):
            try:
                arn = json.loads(body)["task"]["taskArn"]
            except (ValueError, KeyError, TypeError):
                arn = task
            STOPPED_AT.setdefault(arn, time.time())
    return body


# ---------------------------------------------------------------------------------------------
# Stopped tasks are forgotten.

behaviour(
    "ecs-stopped-task-retention",
    "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DescribeTasks.html",
    "DescribeTasks: \"Currently, stopped tasks appear in the returned results for at least one "
    "hour.\" After that ECS forgets them: DescribeTasks answers them as a MISSING failure and "
    "ListTasks no longer lists them. moto keeps every task forever (and DescribeTasks, ListTasks "
    "and StopTask read all of them, so it slows as tasks accumulate). A task stopped more than "
    "`stoppedTaskRetentionSeconds` (3,600) ago is removed from moto.",
)

# Task ARN -> time.time() at which it reached STOPPED (StopTask answered, or its container's exit
# reported after a StopTask); `forget_stopped_tasks` removes them from moto once retention ends.
STOPPED_AT: dict = {}
_LAST_SWEEP = [0.0]


def forget_stopped_tasks(now: float) -> None:
    """Removes tasks stopped longer ago than the retention from moto (at most once a second).
    The caller holds ECS_LOCK, so no moto ECS call runs meanwhile."""
    if not enabled("ecs-stopped-task-retention") or now - _LAST_SWEEP[0] < 1.0:
        return
    _LAST_SWEEP[0] = now
    from moto.ecs.models import ecs_backends

    retention = float(FAULTS["stoppedTaskRetentionSeconds"])
    with LOCK:
        expired = [arn for arn, at in STOPPED_AT.items() if now - at >= retention]
        for arn in expired:
            del STOPPED_AT[arn]
            TASK_STARTED.pop(arn, None)
    for arn in expired:
        # arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID (the long ARN format moto issues)
        parts = arn.split(":", 5)
        if len(parts) < 6:
            continue
        region, account = parts[3], parts[4]
        backend = ecs_backends[account].get(region) if account in ecs_backends else None
        if backend is None:
            continue
        for tasks in backend.tasks.values():
            tasks.pop(arn, None)


ECS_LOCK = threading.Lock()


def serialized(app, environ, start_response):
    """Runs one ECS request under ECS_LOCK (moto's ECS state is read and changed by one request at
    a time, so forgetting tasks never races a request), its answer read in full inside it."""
    with ECS_LOCK:
        forget_stopped_tasks(time.time())
        return [b"".join(app(environ, start_response))]


def describe_tasks(req: Request, status: str, body: bytes) -> bytes:
    """DescribeTasks: tasks still STOPPING say so; tasks too new to be seen, and tasks ECS does not
    know (moto leaves them out silently), are MISSING failures."""
    if not status.startswith("200"):
        return body
    doc = json.loads(body)
    answered = {t.get("taskArn", "") for t in doc.get("tasks", [])}
    answered |= {f.get("arn", "") for f in doc.get("failures", [])}
    ids = {a.rsplit("/", 1)[-1] for a in answered}
    unknown = [t for t in req.json().get("tasks", []) if t not in answered and t.rsplit("/", 1)[-1] not in ids]
    if not unknown and not STOPPING and FAULTS["describeLagMs"] <= 0:
        return body
    doc.setdefault("failures", []).extend({"arn": t, "reason": "MISSING"} for t in unknown)
    with LOCK:
        for t in doc.get("tasks", []):
            if t.get("taskArn") in STOPPING:
                t["lastStatus"] = "STOPPING"
        describe_lag(doc)
    return json.dumps(doc).encode()


# ---------------------------------------------------------------------------------------------
# Faults ECS produces that moto never does, switched on by a test
# (POST /ferry-strict/ecs {"describeLagMs": N, "placementFailures": K, "placementReason": R}).
#
# - Eventual consistency (RunTask API reference: "The Amazon ECS API follows an eventual
#   consistency model ... run the DescribeTasks command repeatedly, starting with a couple of
#   seconds of wait time and increasing gradually up to five minutes"): for `describeLagMs`
#   after RunTask, DescribeTasks answers a task as a `MISSING` failure. ListTasks knows it.
# - Placement failures (RunTask API reference, `failures`: "Any failures associated with the
#   call"; API_Failure.html lists reasons such as RESOURCE:ENI and RESOURCE:MEMORY): the next
#   `placementFailures` RunTask calls start nothing and answer a failure. The answer is kept
#   under the call's clientToken like any other, so a retry with the same token gets it again.

FAULTS = {"describeLagMs": 0, "placementFailures": 0, "placementReason": "RESOURCE:ENI",
          "stoppedTaskRetentionSeconds": 3600}
TASK_STARTED: dict = {}  # task ARN -> time.time() of the RunTask that started it


def set_faults(change: dict) -> None:
    with LOCK:
        FAULTS.update({k: v for k, v in change.items() if k in FAULTS})


def placement_failure(req: Request):
    """A failed placement answer for this RunTask, if one is due."""
    with LOCK:
        if FAULTS["placementFailures"] <= 0:
            return None
        FAULTS["placementFailures"] -= 1
        reason = FAULTS["placementReason"]
    body = json.dumps({"tasks": [], "failures": [{"reason": reason, "detail": "ferry-strict: no capacity"}]}).encode()
    token = req.json().get("clientToken")
    if token:
        with LOCK:
            RUN_TASK_TOKENS[token] = (params_digest(req.json()), body)
    return "200 OK", [("Content-Type", "application/x-amz-json-1.1")], body


def tasks_started(body: bytes) -> None:
    """Remembers when RunTask started each task of its answer."""
    try:
        tasks = json.loads(body).get("tasks", [])
    except ValueError:
        return
    now = time.time()
    with LOCK:
        for t in tasks:
            TASK_STARTED.setdefault(t.get("taskArn", ""), now)


def describe_lag(doc: dict) -> None:
    """Moves tasks started less than `describeLagMs` ago to `failures` as MISSING."""
    lag = FAULTS["describeLagMs"] / 1000.0
    if lag <= 0:
        return
    now = time.time()
    keep, missing = [], []
    for t in doc.get("tasks", []):
        started = TASK_STARTED.get(t.get("taskArn"))
        (missing if started is not None and now - started < lag else keep).append(t)
    doc["tasks"] = keep
    doc.setdefault("failures", []).extend({"arn": t["taskArn"], "reason": "MISSING"} for t in missing)
