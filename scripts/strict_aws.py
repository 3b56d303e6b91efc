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
    POST /ferry-strict/deny   {"deny": [{"principal": P, "action": "ecs:ListTasks"}]}
                                              explicit denies (P: a role ARN, an account root
                                              ARN, `accesskey:ID` or `*`); [] lifts them
    POST /ferry-strict/rules  {"off": [name], "on": [name]}
    POST /ferry-strict/reset                  every rule on, counters and token memory cleared

`rejected` counts the requests each rule refused, so a test can prove a rule fired.

S3 requests are read path-style (`/bucket/key`), as ferry's emulator clients send them. The
region of a request is the region of its SigV4 credential scope.
"""

import hashlib
import io
import json
import os
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable, Optional

from moto.s3.models import FakeKey, s3_backends

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


# ---------------------------------------------------------------------------------------------
# S3 rules


@rule("s3-key-too-long", "https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html")
def key_too_long(req: Request):
    """An object key is at most 1,024 bytes of UTF-8; a write of a longer key answers 400
    KeyTooLongError (ErrorResponses.html: "Your key is too long")."""
    if is_s3_object_write(req) and len(req.key().encode("utf-8")) > 1024:
        return s3_error("400 Bad Request", "KeyTooLongError", "Your key is too long",
                        MaxSizeAllowed="1024", Size=str(len(req.key().encode("utf-8"))))
    return None


@rule("s3-copy-source-if-match", "https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html")
def copy_source_if_match(req: Request):
    """CopyObject and UploadPartCopy with `x-amz-copy-source-if-match` copy only if the source's
    ETag equals it; otherwise 412 PreconditionFailed (moto copies anyway)."""
    want = req.headers.get("x-amz-copy-source-if-match")
    src = copy_source(req)
    if req.service != "s3" or req.method != "PUT" or want is None or src is None:
        return None
    obj = object_of(*src)
    if obj is None:
        return None  # moto answers NoSuchKey / NoSuchBucket
    if want.strip() != "*" and want.strip().strip('"') != obj.etag.strip('"'):
        return s3_error("412 Precondition Failed", "PreconditionFailed",
                        "At least one of the pre-conditions you specified did not hold",
                        Condition="x-amz-copy-source-If-Match")
    return None


@rule("s3-expected-bucket-owner", "https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucket-owner-condition.html")
def expected_bucket_owner(req: Request):
    """`x-amz-expected-bucket-owner` (and `x-amz-source-expected-bucket-owner` for a copy's
    source) that is not the account owning the bucket: 403 AccessDenied."""
    if req.service != "s3":
        return None
    want = req.headers.get("x-amz-expected-bucket-owner")
    if want and req.bucket():
        bucket = bucket_of(req.bucket())
        if bucket is not None and bucket.account_id != want:
            return s3_error("403 Forbidden", "AccessDenied", "Access Denied", head=req.method == "HEAD")
    want_src = req.headers.get("x-amz-source-expected-bucket-owner")
    src = copy_source(req)
    if want_src and src:
        bucket = bucket_of(src[0])
        if bucket is not None and bucket.account_id != want_src:
            return s3_error("403 Forbidden", "AccessDenied", "Access Denied")
    return None


ACL_GRANT_HEADERS = ("x-amz-grant-read", "x-amz-grant-write", "x-amz-grant-read-acp",
                     "x-amz-grant-write-acp", "x-amz-grant-full-control")


@rule("s3-acl-bucket-owner-enforced", "https://docs.aws.amazon.com/AmazonS3/latest/userguide/about-object-ownership.html")
def acl_owner_enforced(req: Request):
    """With Object Ownership BucketOwnerEnforced (the default for new buckets), setting an ACL
    fails with 400 AccessControlListNotSupported; only `bucket-owner-full-control` (or no ACL)
    is accepted. Reading ACLs still works."""
    if req.service != "s3" or not req.bucket() or req.method not in ("PUT", "POST"):
        return None
    if req.key() == "" and "acl" not in req.query:
        return None  # CreateBucket and bucket configuration: not object ACLs
    sets_acl = "acl" in req.query and req.method == "PUT"
    canned = req.headers.get("x-amz-acl")
    if canned and canned != "bucket-owner-full-control":
        sets_acl = True
    if any(h in req.headers for h in ACL_GRANT_HEADERS):
        sets_acl = True
    bucket = bucket_of(req.bucket())
    if sets_acl and bucket is not None and ownership(bucket) == "BucketOwnerEnforced":
        return s3_error("400 Bad Request", "AccessControlListNotSupported", "The bucket does not allow ACLs")
    return None


@rule("s3-bucket-policy-size", "https://docs.aws.amazon.com/AmazonS3/latest/userguide/add-bucket-policy.html")
def bucket_policy_size(req: Request):
    """A bucket policy is at most 20 KB (20,480 bytes, whitespace removed); a larger one answers
    400 PolicyTooLarge and is not stored."""
    if req.service != "s3" or req.method != "PUT" or "policy" not in req.query or req.key():
        return None
    body = req.body()
    try:
        size = len(json.dumps(json.loads(body), separators=(",", ":")).encode())
    except ValueError:
        size = len(body)
    if size > 20480:
        return s3_error("400 Bad Request", "PolicyTooLarge", "Policy exceeds the maximum allowed document size.")
    return None


@rule("s3-region-redirect", "https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadBucket.html")
def region_redirect(req: Request):
    """A request signed for a region other than the bucket's answers 301 PermanentRedirect with
    `x-amz-bucket-region` (HeadBucket: a bodiless 301 with that header). CreateBucket,
    GetBucketLocation and ListBuckets are answered from any region."""
    if req.service != "s3" or not req.bucket() or not req.region:
        return None
    if "location" in req.query or (req.method == "PUT" and not req.key() and not req.query):
        return None
    bucket = bucket_of(req.bucket())
    if bucket is None or bucket.region_name == req.region:
        return None
    return s3_error("301 Moved Permanently", "PermanentRedirect",
                    "The bucket you are attempting to access must be addressed using the specified endpoint.",
                    extra_headers=[("x-amz-bucket-region", bucket.region_name)],
                    head=req.method == "HEAD", Bucket=req.bucket())


# SSE-KMS ETags. This rule changes what moto stores rather than refusing a request: an object
# stored with SSE-KMS or DSSE-KMS (by request header or by the bucket's default encryption)
# gets an ETag that is not the MD5 of its data, the same wherever it is read (List, Head, Get,
# the CopyObject result, CompleteMultipartUpload, where a multipart object keeps its `-N`).
RULES["s3-kms-etag"] = Rule(
    name="s3-kms-etag",
    aws="https://docs.aws.amazon.com/AmazonS3/latest/API/API_Object.html",
    doc="Objects encrypted with SSE-KMS have ETags that are not an MD5 digest of their data "
        "(Object.ETag); two copies of the same bytes have different ETags.",
    check=lambda req: None,
)
_md5_etag = FakeKey.etag


def _kms_aware_etag(self):
    etag = _md5_etag.fget(self)
    if not RULES["s3-kms-etag"].enabled or self.encryption not in ("aws:kms", "aws:kms:dsse"):
        return etag
    salt = self.__dict__.setdefault("_ferry_kms_salt", os.urandom(16))
    parts = etag.strip('"').partition("-")[2]  # a multipart object keeps its part count
    return '"' + hashlib.md5(salt + etag.encode()).hexdigest() + (f"-{parts}" if parts else "") + '"'


FakeKey.etag = property(_kms_aware_etag)


# Multipart initiators. moto names a fixed user as every upload's Initiator; S3 names the
# principal that called CreateMultipartUpload (for a role session, the session's ARN), which is
# how a copier tells its own abandoned uploads from anyone else's. This rule records the
# caller of each CreateMultipartUpload and puts it into ListMultipartUploads' answer.
RULES["s3-multipart-initiator"] = Rule(
    name="s3-multipart-initiator",
    aws="https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListMultipartUploads.html",
    doc="ListMultipartUploads names each upload's Initiator: the principal that created it "
        "(an assumed-role session's ARN for a role session).",
    check=lambda req: None,
)
UPLOAD_INITIATORS: dict = {}


def caller_arn(access_key: str) -> Optional[str]:
    """The ARN of the principal behind an access key: an assumed-role session, if STS issued it."""
    from moto.sts.models import sts_backends

    for _, by_partition in list(sts_backends.items()):
        for backend in list(by_partition.values()):
            for role in list(backend.assumed_roles):
                if role.access_key_id == access_key:
                    return role.arn
    return None


def record_initiator(req: Request, status: str, body: bytes) -> bytes:
    m = re.search(rb"<UploadId>([^<]+)</UploadId>", body)
    arn = caller_arn(req.access_key)
    if status.startswith("200") and m and arn:
        with LOCK:
            UPLOAD_INITIATORS[m.group(1).decode()] = arn
    return body


def name_initiators(req: Request, status: str, body: bytes) -> bytes:
    def upload(m):
        block = m.group(0)
        uid = re.search(rb"<UploadId>([^<]+)</UploadId>", block)
        arn = UPLOAD_INITIATORS.get(uid.group(1).decode()) if uid else None
        if arn is None:
            return block
        name = arn.split("/", 1)[-1].encode()
        return re.sub(rb"<Initiator>.*?</Initiator>",
                      b"<Initiator><ID>" + arn.encode() + b"</ID><DisplayName>" + name + b"</DisplayName></Initiator>",
                      block, flags=re.S)

    if not status.startswith("200"):
        return body
    return re.sub(rb"<Upload>.*?</Upload>", upload, body, flags=re.S)


# ---------------------------------------------------------------------------------------------
# Permissions: S3 requests are judged against the policies AWS would evaluate.


def s3_actions(req: Request) -> list:
    """The IAM actions an S3 request needs: [(action, resource ARN, condition context)]
    (S3 User Guide, "Policy actions for Amazon S3" and "Required permissions for Amazon S3 API
    operations")."""
    b, k, q, m = req.bucket(), req.key(), req.query, req.method
    if not b:
        return [("s3:ListAllMyBuckets", "*", {})]
    bucket = f"arn:aws:s3:::{b}"
    obj = f"{bucket}/{k}"
    out = []
    if not k:
        sub = {
            "policy": ("s3:GetBucketPolicy", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy"),
            "versioning": ("s3:GetBucketVersioning", "s3:PutBucketVersioning", None),
            "encryption": ("s3:GetEncryptionConfiguration", "s3:PutEncryptionConfiguration",
                           "s3:PutEncryptionConfiguration"),
            "ownershipControls": ("s3:GetBucketOwnershipControls", "s3:PutBucketOwnershipControls",
                                  "s3:PutBucketOwnershipControls"),
            "lifecycle": ("s3:GetLifecycleConfiguration", "s3:PutLifecycleConfiguration",
                          "s3:PutLifecycleConfiguration"),
            "tagging": ("s3:GetBucketTagging", "s3:PutBucketTagging", "s3:PutBucketTagging"),
            "acl": ("s3:GetBucketAcl", "s3:PutBucketAcl", None),
            "location": ("s3:GetBucketLocation", None, None),
            "uploads": ("s3:ListBucketMultipartUploads", None, None),
            "versions": ("s3:ListBucketVersions", None, None),
        }
        for name, (get, put, delete) in sub.items():
            if name in q:
                action = {"GET": get, "PUT": put, "DELETE": delete}.get(m)
                return [(action or f"s3:Unknown{m}{name}", bucket, {})]
        if m == "POST" and "delete" in q:
            keys = re.findall(rb"<Key>([^<]*)</Key>", req.body())
            return [("s3:DeleteObject", f"{bucket}/{xml_unescape(x.decode())}", {}) for x in keys]
        if m in ("GET", "HEAD"):
            return [("s3:ListBucket", bucket, {"s3:prefix": q.get("prefix", [""])[0]})]
        if m == "PUT":
            out.append(("s3:CreateBucket", bucket, {}))
            if "x-amz-object-ownership" in req.headers:
                out.append(("s3:PutBucketOwnershipControls", bucket, {}))
            return out
        if m == "DELETE":
            return [("s3:DeleteBucket", bucket, {})]
        return [(f"s3:Unknown{m}", bucket, {})]
    for name, (get, put) in {"tagging": ("s3:GetObjectTagging", "s3:PutObjectTagging"),
                             "acl": ("s3:GetObjectAcl", "s3:PutObjectAcl")}.items():
        if name in q:
            return [({"GET": get, "PUT": put}.get(m) or f"s3:Unknown{m}{name}", obj, {})]
    if m in ("GET", "HEAD"):
        if "uploadId" in q:
            return [("s3:ListMultipartUploadParts", obj, {})]
        return [("s3:GetObjectVersion" if "versionId" in q else "s3:GetObject", obj, {})]
    if m == "DELETE":
        if "uploadId" in q:
            return [("s3:AbortMultipartUpload", obj, {})]
        return [("s3:DeleteObject", obj, {})]
    # PUT or POST: PutObject, CopyObject, UploadPart(Copy), Create/CompleteMultipartUpload
    out.append(("s3:PutObject", obj, {}))
    if "x-amz-tagging" in req.headers:
        out.append(("s3:PutObjectTagging", obj, {}))
    if "x-amz-acl" in req.headers or any(h in req.headers for h in ACL_GRANT_HEADERS):
        out.append(("s3:PutObjectAcl", obj, {}))
    src = copy_source(req)
    if src is not None:
        src_obj = f"arn:aws:s3:::{src[0]}/{src[1]}"
        out.append(("s3:GetObjectVersion" if src[2] else "s3:GetObject", src_obj, {}))
        if "uploadId" not in q and req.headers.get("x-amz-tagging-directive", "COPY") == "COPY":
            out.append(("s3:GetObjectTagging", src_obj, {}))
            out.append(("s3:PutObjectTagging", obj, {}))
    return out


def xml_unescape(text: str) -> str:
    return (text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"')
            .replace("&apos;", "'").replace("&amp;", "&"))


def wildcard(pattern: str, value: str, fold_case: bool = False) -> bool:
    """IAM's `*`/`?` matching; `${*}`, `${?}` and `${$}` stand for the characters themselves."""
    rx, i = "", 0
    while i < len(pattern):
        if pattern.startswith(("${*}", "${?}", "${$}"), i):
            rx += re.escape(pattern[i + 2])
            i += 4
        elif pattern[i] == "*":
            rx, i = rx + ".*", i + 1
        elif pattern[i] == "?":
            rx, i = rx + ".", i + 1
        else:
            rx, i = rx + re.escape(pattern[i]), i + 1
    return re.fullmatch(rx, value, re.S | (re.I if fold_case else 0)) is not None


def as_list(v) -> list:
    return v if isinstance(v, list) else [v]


def condition_holds(cond: dict, ctx: dict) -> bool:
    """The operators ferry's and its users' policies use; an unknown one never holds.
    Requests to the emulator stand for HTTPS ones: aws:SecureTransport is true."""
    context = dict(ctx, **{"aws:SecureTransport": "true"})
    for op, tests in cond.items():
        for key, want in tests.items():
            have = context.get(key)
            if have is None:
                return False
            wants = [str(w) for w in as_list(want)]
            if op == "StringLike" and not any(wildcard(w, have) for w in wants):
                return False
            elif op == "StringEquals" and have not in wants:
                return False
            elif op == "StringNotLike" and any(wildcard(w, have) for w in wants):
                return False
            elif op == "Bool" and have.lower() not in [w.lower() for w in wants]:
                return False
            elif op not in ("StringLike", "StringEquals", "StringNotLike", "Bool"):
                return False
    return True


def principal_matches(principal, who: dict) -> bool:
    if principal == "*":
        return True
    for p in as_list((principal or {}).get("AWS", [])):
        if p == "*" or p in (who["role"], who["root"], who["account"]):
            return True
    return False


def decide(statements: list, action: str, resource: str, ctx: dict, who: Optional[dict]) -> Optional[bool]:
    """True: allowed; False: explicitly denied; None: no statement applies (implicit deny).
    With `who`, statements are a resource policy's and their Principal must name the caller."""
    allowed = None
    for st in statements:
        if who is not None and not principal_matches(st.get("Principal"), who):
            continue
        if not any(wildcard(a, action, fold_case=True) for a in as_list(st.get("Action", []))):
            continue
        if not any(wildcard(r, resource) for r in as_list(st.get("Resource", []))):
            continue
        if not condition_holds(st.get("Condition", {}), ctx):
            continue
        if st.get("Effect") == "Deny":
            return False
        allowed = True
    return allowed


def caller(req: Request) -> Optional[dict]:
    """The role session behind the request's access key: role ARN, account, identity policies
    (None for credentials STS did not issue: the emulator's root keys)."""
    arn = caller_arn(req.access_key)
    if arn is None:
        return None
    m = re.match(r"arn:aws:sts::(\d+):assumed-role/([^/]+)/", arn)
    if not m:
        return None
    account, role_name = m.group(1), m.group(2)
    from moto.iam.models import iam_backends

    try:
        role = iam_backends[account]["aws"].get_role(role_name)
        policies = [json.loads(d) if isinstance(d, str) else d for d in role.policies.values()]
        for managed in role.managed_policies.values():
            version = next(v for v in managed.versions if v.version_id == managed.default_version_id)
            document = version.document
            policies.append(json.loads(document) if isinstance(document, str) else document)
    except Exception:
        policies = []
    return {"session": arn, "role": f"arn:aws:iam::{account}:role/{role_name}", "account": account,
            "root": f"arn:aws:iam::{account}:root", "policies": policies}


USED_ACTIONS: dict = {}


@rule("iam-s3-permissions", "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html")
def s3_permissions(req: Request):
    """An S3 request by a role session is allowed only if the role's identity policies allow
    every action it needs and none denies it (roles with no policy at all, the test harness's
    admin roles, are not judged); a request into another account's bucket also needs that
    bucket's policy to allow the role (cross-account access needs both sides). Answer: 403
    AccessDenied. Allowed actions are recorded per role (`GET /ferry-strict/permissions`)."""
    if req.service != "s3":
        return None
    who = caller(req)
    if who is None:
        return None
    for action, resource, ctx in s3_actions(req):
        if who["policies"]:
            verdict = None
            for doc in who["policies"]:
                v = decide(as_list(doc.get("Statement", [])), action, resource, ctx, None)
                if v is False:
                    verdict = False
                    break
                verdict = verdict or v
            if not verdict:
                return access_denied(req, f"{who['role']} has no permission {action} on {resource}")
        bucket_name = resource.split(":::", 1)[-1].split("/", 1)[0] if ":::" in resource else ""
        bucket = bucket_of(bucket_name) if bucket_name else None
        if bucket is not None:
            policy = json.loads(bucket.policy) if getattr(bucket, "policy", None) else {}
            statements = as_list(policy.get("Statement", []))
            v = decide(statements, action, resource, ctx, who)
            if v is False or (v is None and bucket.account_id != who["account"]):
                return access_denied(req, f"the policy of bucket {bucket_name} does not allow {who['role']} {action} on {resource}")
        if who["policies"]:
            with LOCK:
                USED_ACTIONS.setdefault(who["role"], set()).add(action)
    return None


DENY_LIST: list = []


def principal_of(req: Request) -> list:
    """The names a deny entry may use for the caller: its access key (`accesskey:ID`), and the
    role (`arn:aws:iam::A:role/R`) of an STS session or else the account root."""
    names = [f"accesskey:{req.access_key}"]
    arn = caller_arn(req.access_key)
    m = re.match(r"arn:aws:sts::(\d+):assumed-role/([^/]+)/", arn or "")
    if m:
        names.append(f"arn:aws:iam::{m.group(1)}:role/{m.group(2)}")
    else:
        from moto.iam.models import get_account_id_from

        names.append(f"arn:aws:iam::{get_account_id_from(req.access_key)}:root")
    return names


def action_of(req: Request) -> list:
    """IAM action names of a request, for any service ferry calls."""
    if req.service == "s3":
        return [a for a, _, _ in s3_actions(req)]
    if req.headers.get("x-amz-target"):
        return [f"{req.service}:{req.target()}"]
    params = urllib.parse.parse_qs(req.environ.get("QUERY_STRING", ""))
    if req.method == "POST" and "x-www-form-urlencoded" in req.headers.get("content-type", ""):
        params.update(urllib.parse.parse_qs(req.body().decode("utf-8", "replace")))
    action = params.get("Action", [""])[0]
    return [f"{req.service}:{action}"] if action else []


@rule("iam-deny-list", "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html")
def deny_list(req: Request):
    """Explicit denies a test sets (`POST /ferry-strict/deny {"deny": [{"principal", "action"}]}`)
    for any service: the request is refused with that service's AccessDenied, as AWS refuses a
    call an explicit Deny covers. Shows how ferry behaves when a permission is missing."""
    if not DENY_LIST:
        return None
    who, actions = principal_of(req), action_of(req)
    for entry in DENY_LIST:
        if entry.get("principal", "*") in who + ["*"] and any(
            wildcard(entry["action"], a, fold_case=True) for a in actions
        ):
            message = f"{who[-1]} is not authorized to perform {entry['action']} (denied by the test)"
            if req.service == "s3":
                return access_denied(req, message)
            if req.headers.get("x-amz-target"):
                return json_error("AccessDeniedException", message)
            body = (f'<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>'
                    f'<Message>{message}</Message></Error><RequestId>ferry-strict</RequestId></ErrorResponse>').encode()
            return "403 Forbidden", [("Content-Type", "text/xml")], body
    return None


def access_denied(req: Request, why: str) -> Response:
    return s3_error("403 Forbidden", "AccessDenied", f"Access Denied ({why})", head=req.method == "HEAD")


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
        req = parse(environ)
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
        if req.service == "ecs" and req.target() == "RunTask" and req.json().get("clientToken"):
            return self.remember_run_task(req, environ, start_response)
        if enabled("s3-multipart-initiator") and req.service == "s3" and "uploads" in req.query:
            if req.method == "POST" and req.key():
                return self.rewrite(environ, start_response, lambda st, b: record_initiator(req, st, b))
            if req.method == "GET" and not req.key():
                return self.rewrite(environ, start_response, lambda st, b: name_initiators(req, st, b))
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
        if path == "/ferry-strict/permissions":
            body = json.dumps({role: sorted(a) for role, a in USED_ACTIONS.items()}, indent=1).encode()
        else:
            body = json.dumps(
                {r.name: {"enabled": r.enabled, "aws": r.aws, "doc": r.doc, "rejected": r.rejected}
                 for r in RULES.values()},
                indent=1,
            ).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
