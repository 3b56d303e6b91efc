#!/usr/bin/env python3
"""Operator benchmark: N jobs (default 1,000) at steady state on the emulator.

Prints:
  * AWS API calls per job per resync pass at steady state (every service the operator calls,
    DynamoDB included; the stream poll, a constant per operator, is shown apart), over a window
    of several resyncs that includes one drift check of every job;
  * the operator's peak RSS (VmHWM);
  * time from `ferry apply` of a new job to its RunTask (median and p90 over a sample), through
    the table's stream.

Run it with scripts/bench-operator.sh (builds ferry, installs moto; TABLE=fakecloud puts the table
on fakecloud). Not a timed test: figures only. The emulator (moto, ~100 requests/s) is much slower
than AWS, so latency figures are upper bounds.
"""

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FERRY = os.environ.get("FERRY_BIN", os.path.join(ROOT, "target", "debug", "ferry"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# Jobs per source bucket: each job adds a statement to its source bucket's policy, and S3 caps a
# bucket policy at 20 KiB (about 35 of ferry's statements).
JOBS_PER_SOURCE = 20


def source_of(i):
    return f"bench-source-{i // JOBS_PER_SOURCE}"


def job_doc(name, source):
    return f"""apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{ name: {name} }}
spec:
  source: {{ account: "111111111111", region: eu-west-1, bucket: {source}, roleArn: "arn:aws:iam::111111111111:role/ferry-source" }}
  destination: {{ account: "222222222222", region: us-east-1, bucket: bench-{name}, roleArn: "arn:aws:iam::222222222222:role/ferry-destination", create: {{}} }}
---
"""


def metrics(port):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()


def aws_calls(text):
    """Total operator AWS requests, and those of the stream poll."""
    total = stream = 0.0
    for line in text.splitlines():
        if line.startswith("ferry_aws_requests_total{"):
            value = float(line.rsplit(" ", 1)[1])
            if 'service="dynamodb streams"' in line or 'service="dynamodbstreams"' in line:
                stream += value
            else:
                total += value
    return total, stream


def calls_by_operation(text):
    """Operator AWS requests by service and operation (stream poll aside)."""
    out = {}
    for m in re.finditer(r'ferry_aws_requests_total\{operation="([^"]*)",outcome="[^"]*",service="([^"]*)"\} (\S+)', text):
        op, service, value = m.group(1), m.group(2), float(m.group(3))
        if "streams" not in service:
            out[f"{service} {op}"] = out.get(f"{service} {op}", 0.0) + value
    return out


def phases(text):
    counts = {}
    for m in re.finditer(r'ferry_job_phase\{copyjob="[^"]*",phase="(\w+)"\} 1', text):
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


def memory(pid, field):
    """A process's VmRSS or VmHWM (peak) in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--resync", type=int, default=20)
    p.add_argument("--drift", type=int, default=120)
    p.add_argument("--latency-samples", type=int, default=15)
    p.add_argument("--stopped-task-retention", type=int, default=300,
                   help="seconds the emulated ECS keeps a stopped task (AWS: at least an hour). moto "
                        "reads every task it keeps on each DescribeTasks, ListTasks and StopTask, so "
                        "thousands of finished jobs' tasks would slow it far more than ECS")
    args = p.parse_args()
    # Stop the operator and agent (finally below) when the benchmark itself is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL=args.endpoint, AWS_EC2_METADATA_DISABLED="true", FERRY_TABLE="ferry",
        FERRY_LOG="warn",
    )
    local = [os.path.join(ROOT, ".venv", "bin", "python"), os.path.join(ROOT, "scripts", "local-aws.py"),
             "--endpoint", args.endpoint]
    subprocess.run(local + ["ecs-manual"], check=True)
    urllib.request.urlopen(urllib.request.Request(
        f"{args.endpoint}/ferry-strict/ecs", method="POST",
        data=json.dumps({"stoppedTaskRetentionSeconds": args.stopped_task_retention}).encode()))
    subprocess.run(local + ["boundary"], check=True)
    net = json.loads(subprocess.run(local + ["network"], check=True, capture_output=True, text=True).stdout)
    buckets = sorted({source_of(i) for i in range(args.jobs)} | {"bench-source-lat"})
    subprocess.run(local + ["bucket", "--account", "111111111111", "--region", "eu-west-1",
                            "--bucket", ",".join(buckets)], check=True)
    subprocess.run([FERRY, "init"], env=env, check=True, stdout=subprocess.DEVNULL)

    work = tempfile.mkdtemp()
    port = free_port()
    agent = subprocess.Popen([FERRY, "local-agent", "--create-cluster"], env=env,
                             stderr=open(os.path.join(work, "agent.log"), "w"))
    op = subprocess.Popen(
        [FERRY, "operator", "--listen", f"127.0.0.1:{port}", "--subnets", net["subnet"],
         "--security-groups", net["securityGroup"], "--allow-any", "--s3-force-path-style",
         "--worker-env", "FERRY_S3_FORCE_PATH_STYLE=true",
         "--resync-seconds", str(args.resync), "--drift-seconds", str(args.drift),
         "--task-poll-seconds", "5", "--concurrency", "16"],
        env=env, stderr=open(os.path.join(work, "operator.log"), "w"))
    try:
        for _ in range(100):
            try:
                metrics(port)
                break
            except OSError:
                time.sleep(0.2)
        # Bring the jobs to steady state in batches (each run starts a worker process).
        t0 = time.time()
        for start in range(0, args.jobs, args.batch):
            indexes = range(start, min(start + args.batch, args.jobs))
            names = [f"j{i:04d}" for i in indexes]
            path = os.path.join(work, f"batch-{start}.yaml")
            with open(path, "w") as f:
                f.write("".join(job_doc(f"j{i:04d}", source_of(i)) for i in indexes))
            subprocess.run([FERRY, "apply", "-f", path], env=env, check=True, stdout=subprocess.DEVNULL)
            deadline = time.time() + 600
            while True:
                done = phases(metrics(port)).get("Succeeded", 0)
                if done >= start + len(names):
                    break
                if time.time() > deadline:
                    sys.exit(f"jobs did not succeed; see {work}/operator.log")
                # A scrape of 10,000 jobs is about 20 MB of text: poll it no more often than a
                # Prometheus would.
                time.sleep(1 if args.jobs <= 2000 else 10)
            print(f"  {start + len(names)} jobs Succeeded ({time.time() - t0:.0f} s; operator RSS "
                  f"{memory(op.pid, 'VmRSS'):.1f} MiB, peak {memory(op.pid, 'VmHWM'):.1f} MiB)", flush=True)
        ramp = time.time() - t0

        # Steady state: count calls over a window of whole resync passes including a drift check.
        time.sleep(args.resync)
        text = metrics(port)
        before, stream_before = aws_calls(text)
        ops_before = calls_by_operation(text)
        window = args.drift
        time.sleep(window)
        text = metrics(port)
        after, stream_after = aws_calls(text)
        ops_after = calls_by_operation(text)
        passes = window / args.resync
        per_job_pass = (after - before) / (args.jobs * passes)
        rss, now_rss = memory(op.pid, "VmHWM"), memory(op.pid, "VmRSS")

        # Apply -> RunTask latency through the stream.
        ecs = boto3.client("ecs", endpoint_url=args.endpoint, region_name="us-east-1",
                           aws_access_key_id="test", aws_secret_access_key="test")
        latencies = []
        for i in range(args.latency_samples):
            name = f"lat{i:03d}"
            path = os.path.join(work, f"{name}.yaml")
            with open(path, "w") as f:
                f.write(job_doc(name, "bench-source-lat"))
            family = f"ferry-{name}"
            start = time.time()
            subprocess.run([FERRY, "apply", "-f", path], env=env, check=True, stdout=subprocess.DEVNULL)
            applied = time.time()
            while time.time() - applied < 60:
                if ecs.list_tasks(cluster="ferry", family=family)["taskArns"]:
                    break
                time.sleep(0.02)
            latencies.append(time.time() - applied)
            del start
            time.sleep(1)
        latencies.sort()
        print()
        table = os.environ.get("BENCH_TABLE", "moto")
        print(f"operator benchmark: {args.jobs} jobs at steady state (resync {args.resync} s, drift check {args.drift} s)")
        print(f"  stand-ins: table (DynamoDB + stream) on {table}; S3, IAM, STS, ECS on moto "
              f"(stopped tasks kept {args.stopped_task_retention} s); "
              f"operator built with the {os.environ.get('BENCH_PROFILE', 'dev')} profile")
        print(f"  {args.jobs} jobs Succeeded in {ramp:.0f} s")
        print(f"  AWS calls per job per resync pass: {per_job_pass:.3f}  (target <= 1.2; "
              f"{after - before:.0f} calls over {passes:.0f} passes incl. one drift check of every job)")
        by_op = sorted(((v - ops_before.get(k, 0.0), k) for k, v in ops_after.items()), reverse=True)
        print("  of which: " + ", ".join(f"{k} {n:.0f}" for n, k in by_op if n > 0))
        print(f"  stream polling (per operator, not per job): {(stream_after - stream_before) / window:.1f} calls/s")
        print(f"  operator peak RSS: {rss:.1f} MiB, {now_rss:.1f} MiB at the end of the window  (target <= 64 MiB)")
        print(f"  apply -> RunTask: median {statistics.median(latencies):.2f} s, "
              f"p90 {latencies[int(len(latencies) * 0.9) - 1]:.2f} s over {len(latencies)} jobs  (target median <= 1 s)")
    finally:
        for proc in (op, agent):
            proc.terminate()
        for proc in (op, agent):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
