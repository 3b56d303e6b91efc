"""ECS rules: RunTask/StartTask/ListTasks parameters and clientToken idempotency."""

import hashlib
import json
import re

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
            STOPPING.discard(task)
    return "200 OK", [("Content-Type", "application/x-amz-json-1.1")], json.dumps({"acknowledgment": "ACK"}).encode()


def stop_requested(req: Request, status: str, body: bytes) -> bytes:
    """After moto answered a StopTask: if it accepted it, a task whose container still runs is
    STOPPING. Returns moto's answer unchanged."""
    task = req.json().get("task", "")
    with LOCK:
        if status.startswith("200") and enabled("ecs-stop-lifecycle") and task in AGENT_TASKS:
            STOPPING.add(task)
    return body


def describe_tasks(status: str, body: bytes) -> bytes:
    """DescribeTasks: tasks still STOPPING say so."""
    if not status.startswith("200") or not STOPPING:
        return body
    doc = json.loads(body)
    with LOCK:
        for t in doc.get("tasks", []):
            if t.get("taskArn") in STOPPING:
                t["lastStatus"] = "STOPPING"
    return json.dumps(doc).encode()
