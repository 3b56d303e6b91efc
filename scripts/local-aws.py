#!/usr/bin/env python3
"""Prepares the AWS emulator (moto) for the quick start and the tests.

Subcommands (all take --endpoint URL):
  ecs-manual                 keep ECS tasks RUNNING until someone stops them (moto otherwise
                             walks them to STOPPED by itself)
  network [--region R]       print {"subnet": ..., "securityGroup": ...} of the default VPC
  roles                      create ferry-source in 111111111111 and ferry-destination in
                             222222222222 (moto does not enforce trust; made for realism)
  seed --account A --region R --bucket B [--prefix P] [--count N] [--size BYTES]
                             create a bucket in account A/region R and put N objects under P
  bucket --account A --region R --bucket B[,B2,...]
                             create empty buckets
  boundary [--account A]     create the task roles' permissions boundary ferry-task-boundary in
                             the operator's account (default 123456789012), as the
                             CloudFormation template does
  role-policies --policies FILE
                             give ferry-source and ferry-destination, as inline policies, what
                             `ferry policies` printed into FILE (one policy per job); the
                             emulator's strict layer then evaluates every S3 request of theirs

Uses boto3, which comes with moto in .venv.
"""

import argparse
import json
import sys
import urllib.request

import boto3
from botocore.config import Config


def session(endpoint, region, account=None):
    base = boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name=region
    )
    if account is None:
        return base
    creds = base.client("sts", endpoint_url=endpoint).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/admin", RoleSessionName="ferry-setup"
    )["Credentials"]
    return boto3.session.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=region,
    )


def s3(endpoint, region, account):
    return session(endpoint, region, account).client(
        "s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"})
    )


def ecs_manual(args):
    body = json.dumps(
        {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1000000}}
    ).encode()
    req = urllib.request.Request(
        args.endpoint + "/moto-api/state-manager/set-transition",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(req).read()


def network(args):
    ec2 = session(args.endpoint, args.region).client("ec2", endpoint_url=args.endpoint)
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    vpc = vpcs[0]["VpcId"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "group-name", "Values": ["default"]}]
    )["SecurityGroups"]
    print(json.dumps({"subnet": subnets[0]["SubnetId"], "securityGroup": groups[0]["GroupId"]}))


def roles(args):
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )
    for account, name in [("111111111111", "ferry-source"), ("222222222222", "ferry-destination")]:
        iam = session(args.endpoint, "us-east-1", account).client("iam", endpoint_url=args.endpoint)
        try:
            iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)
        except iam.exceptions.EntityAlreadyExistsException:
            pass


def boundary(args):
    """The template's TaskBoundary with this emulator's accounts and table."""
    doc = {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "AssumeDestinationRoles", "Effect": "Allow", "Action": "sts:AssumeRole",
             "Resource": "arn:aws:iam::222222222222:role/ferry-destination"},
            {"Sid": "ReadOwnJob", "Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:Query"],
             "Resource": f"arn:aws:dynamodb:us-east-1:{args.account}:table/ferry",
             "Condition": {"ForAllValues:StringEquals": {
                 "dynamodb:LeadingKeys": ["JOB#${aws:PrincipalTag/ferry:job}"]}}},
            {"Sid": "WriteOwnRuns", "Effect": "Allow",
             "Action": ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem"],
             "Resource": f"arn:aws:dynamodb:us-east-1:{args.account}:table/ferry",
             "Condition": {"ForAllValues:StringLike": {
                 "dynamodb:LeadingKeys": ["RUN#${aws:PrincipalTag/ferry:job}#*"]}}},
        ],
    }
    account = None if args.account == "123456789012" else args.account
    iam = session(args.endpoint, "us-east-1", account).client("iam", endpoint_url=args.endpoint)
    try:
        iam.create_policy(PolicyName="ferry-task-boundary", PolicyDocument=json.dumps(doc))
    except iam.exceptions.EntityAlreadyExistsException:
        pass


def role_policies(args):
    with open(args.policies) as f:
        jobs = json.load(f)
    for job in jobs:
        for account, role, kind in [
            ("111111111111", "ferry-source", "sourceRolePolicy"),
            ("222222222222", "ferry-destination", "destinationRolePolicy"),
        ]:
            iam = session(args.endpoint, "us-east-1", account).client("iam", endpoint_url=args.endpoint)
            iam.put_role_policy(
                RoleName=role, PolicyName=f"ferry-{job['job']}", PolicyDocument=json.dumps(job[kind])
            )


def make_bucket(client, bucket, region):
    kwargs = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        client.create_bucket(**kwargs)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass


def bucket(args):
    """Creates the bucket, or each of a comma-separated list of buckets."""
    client = s3(args.endpoint, args.region, args.account)
    for name in args.bucket.split(","):
        make_bucket(client, name, args.region)


def seed(args):
    client = s3(args.endpoint, args.region, args.account)
    make_bucket(client, args.bucket, args.region)
    body = b"x" * args.size
    for i in range(args.count):
        key = f"{args.prefix}{i // 100:03d}/object-{i:05d}.log"
        client.put_object(
            Bucket=args.bucket,
            Key=key,
            Body=body,
            ContentType="text/plain",
            Metadata={"seq": str(i)},
            Tagging="origin=quickstart",
        )
    print(f"seeded s3://{args.bucket}/{args.prefix} with {args.count} objects of {args.size} bytes")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", required=True)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("ecs-manual")
    n = sub.add_parser("network")
    n.add_argument("--region", default="us-east-1")
    sub.add_parser("roles")
    b = sub.add_parser("boundary")
    b.add_argument("--account", default="123456789012")
    rp = sub.add_parser("role-policies")
    rp.add_argument("--policies", required=True)
    for name in ("seed", "bucket"):
        s = sub.add_parser(name)
        s.add_argument("--account", required=True)
        s.add_argument("--region", required=True)
        s.add_argument("--bucket", required=True)
        s.add_argument("--prefix", default="")
        s.add_argument("--count", type=int, default=100)
        s.add_argument("--size", type=int, default=1024)
    args = p.parse_args()
    {
        "ecs-manual": ecs_manual,
        "network": network,
        "roles": roles,
        "boundary": boundary,
        "role-policies": role_policies,
        "seed": seed,
        "bucket": bucket,
    }[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
