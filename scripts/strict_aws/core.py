"""The strict layer's parts every rule uses: the rule registry, the request as a rule sees it,
AWS-shaped error answers, and lookups of moto's state."""

import io
import json
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable, Optional

from moto.s3.models import s3_backends

from . import lookups

Response = tuple  # (status: str, headers: list[tuple[str, str]], body: bytes)


@dataclass
class Rule:
    name: str
    aws: str
    doc: str
    check: Callable
    rejected: int = 0
    enabled: bool = True


RULES: dict = {}
LOCK = threading.Lock()


def rule(name: str, aws: str):
    """Registers a check `f(req) -> Optional[Response]` as the rule `name`, citing `aws`."""

    def register(f):
        RULES[name] = Rule(name=name, aws=aws, doc=(f.__doc__ or "").strip(), check=f)
        return f

    return register


def behaviour(name: str, aws: str, doc: str) -> None:
    """Registers a rule that changes what moto answers rather than refusing requests (it has no
    check; the code that implements it asks `enabled(name)`)."""
    RULES[name] = Rule(name=name, aws=aws, doc=doc, check=lambda req: None)


def enabled(name: str) -> bool:
    return RULES[name].enabled


# ---------------------------------------------------------------------------------------------
# Requests and answers


@dataclass
class Request:
    environ: dict
    method: str
    path: str  # decoded, UTF-8
    query: dict  # name -> list of values (blank values kept)
    headers: dict  # lower-case names
    service: str
    region: str
    access_key: str
    _body: Optional[bytes] = field(default=None, repr=False)

    def body(self) -> bytes:
        """The request body, read once and put back for moto."""
        if self._body is None:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
            data = self.environ["wsgi.input"].read(length) if length else b""
            self.environ["wsgi.input"] = io.BytesIO(data)
            self.environ["CONTENT_LENGTH"] = str(len(data))
            self._body = data
        return self._body

    def json(self) -> dict:
        try:
            return json.loads(self.body() or b"{}")
        except ValueError:
            return {}

    def target(self) -> str:
        """The JSON-protocol operation (`X-Amz-Target: Service.Operation`)."""
        return self.headers.get("x-amz-target", "").rsplit(".", 1)[-1]

    # S3, path-style
    def bucket(self) -> str:
        return self.path.lstrip("/").split("/", 1)[0]

    def key(self) -> str:
        parts = self.path.lstrip("/").split("/", 1)
        return parts[1] if len(parts) == 2 else ""


def parse(environ: dict) -> Request:
    headers = {}
    for k, v in environ.items():
        if k.startswith("HTTP_"):
            headers[k[5:].replace("_", "-").lower()] = v
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    raw_path = environ.get("PATH_INFO", "")
    try:
        path = raw_path.encode("latin-1").decode("utf-8")
    except UnicodeError:
        path = raw_path
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    service, region, access_key = "", "", ""
    m = re.search(r"Credential=([^/]+)/[0-9]+/([^/]+)/([^/]+)/aws4_request", headers.get("authorization", ""))
    if m:
        access_key, region, service = m.group(1), m.group(2), m.group(3)
    return Request(environ, environ.get("REQUEST_METHOD", "GET"), path, query, headers, service, region, access_key)


def s3_error(status: str, code: str, message: str, extra_headers=(), head=False, **fields) -> Response:
    parts = [f"<Code>{code}</Code><Message>{message}</Message>"]
    parts += [f"<{k}>{v}</{k}>" for k, v in fields.items()]
    parts.append("<RequestId>ferry-strict</RequestId>")
    body = b"" if head else ('<?xml version="1.0" encoding="UTF-8"?><Error>' + "".join(parts) + "</Error>").encode()
    headers = [("Content-Type", "application/xml"), ("x-amz-request-id", "ferry-strict")] + list(extra_headers)
    return status, headers, body


def json_error(code: str, message: str, status: str = "400 Bad Request") -> Response:
    body = json.dumps({"__type": code, "message": message}).encode()
    return status, [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", code)], body


# ---------------------------------------------------------------------------------------------
# moto state


def bucket_of(name: str):
    """moto's bucket object, or None."""
    try:
        partition, account = s3_backends.bucket_accounts[name]
        return s3_backends[account][partition].buckets.get(name)
    except KeyError:
        return None


def object_of(bucket_name: str, key: str, version_id: Optional[str]):
    bucket = bucket_of(bucket_name)
    if bucket is None:
        return None
    try:
        partition, account = s3_backends.bucket_accounts[bucket_name]
        return s3_backends[account][partition].get_object(bucket_name, key, version_id=version_id)
    except Exception:  # moto raises its own errors for missing versions; moto answers those
        return None


def ownership(bucket) -> str:
    """The bucket's Object Ownership. Unset means BucketOwnerEnforced: AWS's default for every
    new bucket since April 2023 (about-object-ownership.html)."""
    rule_ = getattr(bucket, "ownership_rule", None)
    if isinstance(rule_, dict):
        rule_ = rule_.get("ObjectOwnership") or (rule_.get("Rule") or {}).get("ObjectOwnership")
    return rule_ or "BucketOwnerEnforced"


def copy_source(req: Request):
    """(bucket, key, versionId) of `x-amz-copy-source`, or None."""
    raw = req.headers.get("x-amz-copy-source")
    if not raw:
        return None
    raw = raw.lstrip("/")
    path, _, query = raw.partition("?")
    path = urllib.parse.unquote(path)
    bucket, _, key = path.partition("/")
    version = urllib.parse.parse_qs(query).get("versionId", [None])[0]
    return bucket, key, version


def is_s3_object_write(req: Request) -> bool:
    """PutObject, CopyObject, UploadPart(Copy), CreateMultipartUpload, CompleteMultipartUpload."""
    return req.service == "s3" and req.key() != "" and req.method in ("PUT", "POST") and not (
        set(req.query) & {"tagging", "acl", "retention", "legal-hold", "restore", "select"}
    )


def assumed_role(access_key: str):
    """The STS session (moto's AssumedRole: `arn`, `policy`) behind an access key, if any."""
    return lookups.assumed_role(access_key)


def sessions() -> dict:
    """Every STS session moto issued: its ARN and the session policy it was assumed with."""
    from moto.sts.models import sts_backends

    out = {}
    for _, by_partition in list(sts_backends.items()):
        for backend in list(by_partition.values()):
            for role in list(backend.assumed_roles):
                out[role.arn] = role.policy
    return out


def caller_arn(access_key: str) -> Optional[str]:
    """The ARN of the principal behind an access key: an assumed-role session, if STS issued it."""
    role = assumed_role(access_key)
    return role.arn if role is not None else None
