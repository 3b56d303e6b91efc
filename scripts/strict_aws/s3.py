"""S3 rules: keys, copy conditions, bucket owners, ACLs, policy size, regions, KMS ETags,
multipart initiators."""

import hashlib
import json
import os
import re
import time

from moto.s3.models import FakeKey

from .core import (LOCK, RULES, Request, behaviour, bucket_of, caller_arn, copy_source,
                   is_s3_object_write, object_of, ownership, rule, s3_error)

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


@rule("s3-malformed-policy", "https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html")
def malformed_policy(req: Request):
    """S3 stores only policy documents: JSON whose `Statement` is a statement or a list of
    statements (objects). Anything else answers 400 MalformedPolicy and is not stored."""
    if req.service != "s3" or req.method != "PUT" or "policy" not in req.query or req.key():
        return None
    try:
        doc = json.loads(req.body())
    except ValueError:
        doc = None
    statements = doc.get("Statement") if isinstance(doc, dict) else None
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not statements or not all(isinstance(s, dict) for s in statements):
        return s3_error("400 Bad Request", "MalformedPolicy", "Policies must be valid JSON and the first byte must be '{'")
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


# Request rates. S3 serves at least 3,500 PUT/COPY/POST/DELETE and 5,500 GET/HEAD requests per
# second per partitioned prefix and answers 503 SlowDown beyond what the prefix is scaled to;
# it scales a prefix up gradually, so a new or cold prefix grants less. moto never refuses, so
# this rule keeps a token bucket per bucket (one prefix partition) for writes and for reads.
# At AWS's rates it never fires in a test; `POST /ferry-strict/s3 {"writesPerSecond": N,
# "readsPerSecond": M}` lowers the grant to model a prefix S3 has not scaled up yet.
RATE_DEFAULTS = {"writesPerSecond": 3500, "readsPerSecond": 5500}
RATES = dict(RATE_DEFAULTS)
BUCKETS_OF_TOKENS: dict = {}  # (bucket, "writes" | "reads") -> [tokens, last refill time]


def set_rates(change: dict) -> dict:
    with LOCK:
        if change.get("reset"):
            RATES.update(RATE_DEFAULTS)
            BUCKETS_OF_TOKENS.clear()
        for name in RATE_DEFAULTS:
            if name in change:
                RATES[name] = float(change[name])
                BUCKETS_OF_TOKENS.clear()
        return dict(RATES)


@rule("s3-prefix-request-rate", "https://docs.aws.amazon.com/AmazonS3/latest/userguide/optimizing-performance.html")
def prefix_request_rate(req: Request):
    """Beyond the requests per second a prefix partition grants (3,500 PUT/COPY/POST/DELETE,
    5,500 GET/HEAD), S3 answers 503 SlowDown ("Please reduce your request rate.")."""
    if req.service != "s3" or not req.bucket():
        return None
    kind, per_s = ("writes", RATES["writesPerSecond"]) if req.method in ("PUT", "POST", "DELETE") \
        else ("reads", RATES["readsPerSecond"])
    now = time.monotonic()
    with LOCK:
        tokens, last = BUCKETS_OF_TOKENS.get((req.bucket(), kind), (per_s, now))
        # A burst of at most one second's grant.
        tokens = min(max(per_s, 1.0), tokens + (now - last) * per_s)
        if tokens >= 1.0:
            BUCKETS_OF_TOKENS[(req.bucket(), kind)] = (tokens - 1.0, now)
            return None
        BUCKETS_OF_TOKENS[(req.bucket(), kind)] = (tokens, now)
    return s3_error("503 Slow Down", "SlowDown", "Please reduce your request rate.", head=req.method == "HEAD")


# SSE-KMS ETags. This rule changes what moto stores rather than refusing a request: an object
# stored with SSE-KMS or DSSE-KMS (by request header or by the bucket's default encryption)
# gets an ETag that is not the MD5 of its data, the same wherever it is read (List, Head, Get,
# the CopyObject result, CompleteMultipartUpload, where a multipart object keeps its `-N`).
behaviour(
    "s3-kms-etag",
    "https://docs.aws.amazon.com/AmazonS3/latest/API/API_Object.html",
    "Objects encrypted with SSE-KMS have ETags that are not an MD5 digest of their data "
    "(Object.ETag); two copies of the same bytes have different ETags.",
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
behaviour(
    "s3-multipart-initiator",
    "https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListMultipartUploads.html",
    "ListMultipartUploads names each upload's Initiator: the principal that created it "
    "(an assumed-role session's ARN for a role session).",
)
UPLOAD_INITIATORS: dict = {}


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


