"""Permissions: S3 requests judged against the caller role's policies and, across accounts,
the bucket policy; explicit denies a test sets for any service."""

import json
import re
import urllib.parse
from typing import Optional

from .core import assumed_role, LOCK, Request, Response, bucket_of, caller_arn, copy_source, json_error, rule, s3_error
from .s3 import ACL_GRANT_HEADERS

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
    session = assumed_role(req.access_key)
    if session is None:
        return None
    arn = session.arn
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
    try:
        session_policy = json.loads(session.policy) if session.policy else None
    except ValueError:
        session_policy = {"Statement": []}
    return {"session": arn, "role": f"arn:aws:iam::{account}:role/{role_name}", "account": account,
            "root": f"arn:aws:iam::{account}:root", "policies": policies,
            "session_policy": session_policy}


USED_ACTIONS: dict = {}


@rule("iam-s3-permissions", "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html")
def s3_permissions(req: Request):
    """An S3 request by a role session is allowed only if the role's identity policies allow
    every action it needs and none denies it (roles with no policy at all, the test harness's
    admin roles, are not judged); a session assumed with a session policy is limited to what
    that policy allows too (its permissions are the intersection); a request into another
    account's bucket also needs that bucket's policy to allow the role (cross-account access
    needs both sides). Answer: 403 AccessDenied. Allowed actions are recorded per role
    (`GET /ferry-strict/permissions`)."""
    if req.service != "s3":
        return None
    who = caller(req)
    if who is None:
        return None
    for action, resource, ctx in s3_actions(req):
        if who["session_policy"] is not None:
            v = decide(as_list(who["session_policy"].get("Statement", [])), action, resource, ctx, None)
            if not v:
                return access_denied(req, f"the session policy of {who['session']} does not allow {action} on {resource}")
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


@rule("sts-session-policy-length", "https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html")
def session_policy_length(req: Request):
    """AssumeRole's `Policy` (an inline session policy) is at most 2,048 characters ("The
    plaintext that you use for both inline and managed session policies can't exceed 2,048
    characters"); a longer one answers 400 ValidationError."""
    if req.service != "sts":
        return None
    params = urllib.parse.parse_qs(req.body().decode("utf-8", "replace"))
    params.update(urllib.parse.parse_qs(req.environ.get("QUERY_STRING", "")))
    if params.get("Action", [""])[0] != "AssumeRole":
        return None
    policy = params.get("Policy", [""])[0]
    if len(policy) <= 2048:
        return None
    message = ("1 validation error detected: Value at 'policy' failed to satisfy constraint: "
               "Member must have length less than or equal to 2048")
    body = (f'<ErrorResponse><Error><Type>Sender</Type><Code>ValidationError</Code>'
            f'<Message>{message}</Message></Error><RequestId>ferry-strict</RequestId></ErrorResponse>').encode()
    return "400 Bad Request", [("Content-Type", "text/xml")], body


@rule("iam-permissions-boundary-exists", "https://docs.aws.amazon.com/IAM/latest/UserGuide/access_policies_boundaries.html")
def boundary_exists(req: Request):
    """A permissions boundary is a managed policy that exists: CreateRole or
    PutRolePermissionsBoundary naming a policy ARN that does not answers 404 NoSuchEntity
    ("Scope ARN: ... does not exist or is not attachable")."""
    if req.service != "iam":
        return None
    params = urllib.parse.parse_qs(req.body().decode("utf-8", "replace"))
    params.update(urllib.parse.parse_qs(req.environ.get("QUERY_STRING", "")))
    if params.get("Action", [""])[0] not in ("CreateRole", "PutRolePermissionsBoundary"):
        return None
    arn = params.get("PermissionsBoundary", [""])[0]
    if not arn:
        return None
    m = re.match(r"arn:aws:iam::(\d{12}|aws):policy/", arn)
    from moto.iam.models import iam_backends

    account = m.group(1) if m else ""
    try:
        exists = arn in iam_backends[account]["aws"].managed_policies
    except Exception:
        exists = False
    if exists:
        return None
    message = f"Scope ARN: {arn} does not exist or is not attachable."
    body = (f'<ErrorResponse><Error><Type>Sender</Type><Code>NoSuchEntity</Code>'
            f'<Message>{message}</Message></Error><RequestId>ferry-strict</RequestId></ErrorResponse>').encode()
    return "404 Not Found", [("Content-Type", "text/xml")], body


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


