"""The scale benchmark (run by scripts/bench-scale.sh, which builds and starts what it needs).

Figures, each measured in this run:
- planning: LIST requests the virtual S3 served before the first copy, and the planner's probes;
- throughput with N worker processes sharing one run, over a steady-state window, against
  min(N x the one-task rate, the prefix budget);
- complete runs over FULL_KEYS keys: every key copied exactly once; the same with one task
  SIGKILLed mid-way (keys missing, keys copied twice); a SlowDown storm (a prefix budget below
  the requested rate): completion and the 503 rate;
- with --inventory: complete runs driven by an S3 Inventory report (CSV, then Parquet) of
  INVENTORY_ROWS rows in 10 files: LISTs of the source (none expected), GETs of the report,
  keys missing and copied twice, throughput against the prefix budget.
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Vs3:
    def __init__(self, binary, keys, latency_ms, copy_rate, layout="flat", log=None, extra=()):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--keys", str(keys), "--layout", layout,
             "--latency-ms", str(latency_ms), "--copy-rate", str(copy_rate), *extra],
            stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while True:
            try:
                self.stats()
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise SystemExit("vs3 did not start")
                time.sleep(0.1)

    def stats(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/vs3/stats", timeout=5) as r:
            return json.loads(r.read())

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Bench:
    def __init__(self, args):
        self.a = args
        self.dir = tempfile.mkdtemp(prefix="ferry-scale-")
        self.env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                        AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                        AWS_ENDPOINT_URL=args.endpoint, FERRY_TABLE="scale")
        self.ferry(["init"])

    def ferry(self, argv, env=None):
        subprocess.run([self.a.ferry, *argv], env=env or self.env, check=True,
                       stdout=subprocess.DEVNULL)

    def job(self, name, parallelism, run_extra="", source_extra=""):
        path = os.path.join(self.dir, f"{name}.yaml")
        with open(path, "w") as f:
            f.write(f"""apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{name: {name}}}
spec:
  source: {{account: "111111111111", region: us-east-1, bucket: src, roleArn: "arn:aws:iam::111111111111:role/s"{source_extra}}}
  destination: {{account: "222222222222", region: us-east-1, bucket: dst, roleArn: "arn:aws:iam::222222222222:role/d"}}
  run: {{parallelism: {parallelism}{run_extra}}}
""")
        self.ferry(["apply", "-f", path])

    def workers(self, vs3, job, n, concurrency, lease=60):
        env = dict(self.env, AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{vs3.port}",
                   FERRY_S3_FORCE_PATH_STYLE="true", FERRY_ASSUME_DESTINATION_ROLE="false",
                   FERRY_JOB=job, FERRY_RUN="r1", FERRY_COPY_CONCURRENCY=str(concurrency),
                   FERRY_LEASE_SECONDS=str(lease), FERRY_LOG=os.environ.get("FERRY_LOG", "info"),
                   FERRY_SHUTDOWN_GRACE_SECONDS="2")
        procs = []
        for t in range(n):
            log = open(os.path.join(self.dir, f"{job}-t{t}.log"), "w")
            procs.append(subprocess.Popen([self.a.ferry, "worker"], env=dict(env, FERRY_TASK=f"t{t}"),
                                          stdout=log, stderr=subprocess.STDOUT))
        return procs

    def log(self, job, t):
        with open(os.path.join(self.dir, f"{job}-t{t}.log")) as f:
            return re.sub(r"\x1b\[[0-9;]*m", "", f.read())

    def probes(self, job, n):
        for t in range(n):
            m = re.search(r"probes=(\d+)", self.log(job, t))
            if m:
                return int(m.group(1))
        return None

    def capacity(self, job, n):
        """The capacity meters of a run's tasks summed: (rru, wru, {key: rru + wru})."""
        rru = wru = 0.0
        keys = {}
        for t in range(n):
            m = re.search(r"capacity=(\{.*\})", self.log(job, t))
            if not m:
                continue
            c = json.loads(m.group(1))
            rru += c["rru"]
            wru += c["wru"]
            for k, u in c["keys"].items():
                keys[k] = keys.get(k, 0.0) + u["rru"] + u["wru"]
        return rru, wru, keys

    def wait_for(self, what, limit, check):
        deadline = time.time() + limit
        while time.time() < deadline:
            v = check()
            if v:
                return v
            time.sleep(0.2)
        raise SystemExit(f"timed out waiting for {what} (logs in {self.dir})")

    def window(self, n, keys=None):
        """Steady-state throughput of n tasks: (copies/s, LISTs before the first copy, probes,
        503s/s, the tasks' peak RSS in MiB)."""
        a = self.a
        vs3 = Vs3(a.vs3, keys or a.keys, a.latency_ms, a.copy_rate)
        job = f"scale-{n}-{keys or a.keys}"
        self.job(job, n)
        procs = self.workers(vs3, job, n, a.concurrency)
        first = self.wait_for("the first copy", 300, lambda: (s := vs3.stats())["copies"] > 0 and s)
        time.sleep(a.warmup)
        s0, t0 = vs3.stats(), time.time()
        time.sleep(a.window)
        s1, t1 = vs3.stats(), time.time()
        rss = max(peak_rss_mib(p.pid) for p in procs)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait()
        vs3.stop()
        rate = (s1["copies"] - s0["copies"]) / (t1 - t0)
        slow = (s1["slowdowns"] - s0["slowdowns"]) / (t1 - t0)
        return rate, first["lists_before_first_copy"], self.probes(job, n), slow, rss

    def full(self, label, n, keys, copy_rate, kill=False, inventory=None):
        """A complete run of n tasks; returns (vs3 stats, seconds, exit codes, job). With
        `inventory` (csv or parquet) the run reads vs3's report of the source instead of listing."""
        a = self.a
        extra = ["--inventory", inventory, "--inventory-files", "10"] if inventory else []
        vs3 = Vs3(a.vs3, keys, a.latency_ms, copy_rate, extra=extra)
        job = f"full-{label}"
        source = (', inventory: {manifest: "s3://inventory/src/all/2026-11-30T00-00Z/manifest.json"}'
                  if inventory else "")
        self.job(job, n, source_extra=source)
        procs = self.workers(vs3, job, n, a.concurrency, lease=30)
        t0 = time.time()
        if kill:
            self.wait_for("a third of the copies", 600 + keys / 1000,
                          lambda: vs3.stats()["distinct"] > keys // 3)
            procs[0].send_signal(signal.SIGKILL)
        # Wait for every task, sampling each one's RSS while it lives; a complete run gets an
        # hour plus a minute per 10,000 keys. Every 10 s the largest RSS and the keys copied so
        # far go to <job>-progress.tsv, so growth and the tail can be placed in the run.
        deadline = t0 + 3600 + keys / 10_000 * 60
        self.peak_rss = 0.0
        self.samples = []  # (seconds, distinct keys copied, largest VmRSS in MiB)
        tsv = open(os.path.join(self.dir, f"{job}-progress.tsv"), "w")
        tsv.write("seconds\tcopied\trss_mib\n")
        next_sample = t0
        while any(p.poll() is None for p in procs) and time.time() < deadline:
            rss = 0.0
            for p in procs:
                if p.poll() is None:
                    try:
                        self.peak_rss = max(self.peak_rss, peak_rss_mib(p.pid))
                        rss = max(rss, rss_mib(p.pid))
                    except OSError:
                        pass
            if time.time() >= next_sample:
                next_sample += 10
                sample = (time.time() - t0, vs3.stats()["distinct"], rss)
                self.samples.append(sample)
                tsv.write("%.0f\t%d\t%.1f\n" % sample)
                tsv.flush()
            time.sleep(1)
        tsv.close()
        codes = []
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
                codes.append("timeout")
            else:
                codes.append(p.returncode)
        took = time.time() - t0
        s = vs3.stats()
        vs3.stop()
        return s, took, codes, job


def status_mib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib(pid):
    return status_mib(pid, "VmHWM")


def rss_mib(pid):
    return status_mib(pid, "VmRSS")


def by_progress(samples, keys, took):
    """The largest task RSS at a tenth, half and nine tenths of the keys copied, and when the
    last 1% of the keys began (the tail's share of the run)."""
    out = []
    for share in (0.1, 0.5, 0.9):
        at = next((s for s in samples if s[1] >= share * keys), None)
        out.append(f"{share:.0%}: {at[2]:.1f} MiB" if at else f"{share:.0%}: -")
    last = next((s for s in samples if s[1] >= 0.99 * keys), None)
    tail = f"the last 1% of keys took {took - last[0]:.0f} s of {took:.0f}" if last else "no sample at 99%"
    return "the tasks' RSS at " + ", ".join(out) + f"; {tail}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--vs3", required=True)
    ap.add_argument("--ferry", required=True)
    env = os.environ.get
    ap.add_argument("--keys", type=int, default=int(env("KEYS", 10_000_000)))
    ap.add_argument("--full-keys", type=int, default=int(env("FULL_KEYS", 100_000)))
    ap.add_argument("--latency-ms", type=int, default=int(env("LATENCY_MS", 20)))
    ap.add_argument("--copy-rate", type=int, default=3500)
    ap.add_argument("--concurrency", type=int, default=int(env("CONCURRENCY", 8)))
    ap.add_argument("--window", type=float, default=float(env("WINDOW", 30)))
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--tasks", default=env("TASKS", "1 2 4 8"))
    ap.add_argument("--skip-full", action="store_true")
    ap.add_argument("--storm", action="store_true",
                    help="only the SlowDown storm (a complete run of FULL_KEYS keys, 4 tasks)")
    ap.add_argument("--inventory", action="store_true",
                    help="only the runs driven by an S3 Inventory report (INVENTORY_ROWS rows, 4 tasks)")
    ap.add_argument("--inventory-rows", type=int, default=int(env("INVENTORY_ROWS", 1_000_000)))
    ap.add_argument("--inventory-formats", default=env("INVENTORY_FORMATS", "list csv parquet"),
                    help="runs of --inventory: list (the peer: the same keys listed), csv, parquet")
    ap.add_argument("--once", action="store_true",
                    help="only the complete run of FULL_KEYS keys, 4 tasks (exactly once, coordination, peak RSS)")
    ap.add_argument("--kill", action="store_true",
                    help="only the complete run of FULL_KEYS keys, 4 tasks, one SIGKILLed at a third")
    ap.add_argument("--rss", action="store_true",
                    help="only the worker's peak RSS, one task, at 10^5 keys and at KEYS")
    a = ap.parse_args()
    b = Bench(a)
    print(f"virtual S3: flat bucket of {a.keys:,} keys, {a.latency_ms} ms per request, "
          f"prefix budget {a.copy_rate:,} copies/s; {a.concurrency} copies in flight per task")
    if a.storm:
        storm(b, a)
        return
    if a.inventory:
        inventory(b, a)
        return
    if a.once:
        once(b, a)
        return
    if a.kill:
        kill(b, a)
        return
    if a.rss:
        for keys in (100_000, a.keys):
            rate, *_, rss = b.window(1, keys)
            print(f"one task, bucket of {keys:,} keys: peak RSS {rss:.1f} MiB after {a.warmup + a.window:.0f} s "
                  f"at {rate:.0f} copies/s (its listers listing ahead all the while)", flush=True)
        return
    one = None
    for n in [int(x) for x in a.tasks.split()]:
        rate, lists, probes, slow, _ = b.window(n)
        one = one or rate
        ceiling = min(n * one, a.copy_rate)
        print(f"N={n}: {rate:8.1f} copies/s  ({rate / ceiling:.2f} of min(N x one-task, budget) = {ceiling:.0f}); "
              f"planner probes {probes}, LISTs before the first copy {lists} (probes, first pages, first chunks' listings); "
              f"503s {slow:.1f}/s", flush=True)
    if a.skip_full:
        return
    once(b, a)
    kill(b, a)
    storm(b, a)


def kill(b, a):
    """A complete run of 4 tasks over FULL_KEYS keys, one of them SIGKILLed at a third."""
    k = a.full_keys
    s, took, codes, _ = b.full("kill", 4, k, a.copy_rate, kill=True)
    print(f"one of 4 tasks SIGKILLed at a third, {k:,} keys: {took:.1f} s, exit codes {codes}; "
          f"missing {k - s['distinct']}, copied twice {s['copied_twice']} (a chunk is 1,000 keys)", flush=True)


def once(b, a):
    """A complete run of 4 tasks over FULL_KEYS keys: exactly once, the coordination cost, and
    the tasks' peak RSS over the whole run."""
    k = a.full_keys
    s, took, codes, job = b.full("once", 4, k, a.copy_rate)
    print(f"complete run, 4 tasks, {k:,} keys: {took:.1f} s ({s['distinct'] / took:.0f} copies/s), "
          f"exit codes {codes}; missing {k - s['distinct']}, copied twice {s['copied_twice']}; "
          f"the tasks' peak RSS {b.peak_rss:.1f} MiB", flush=True)
    print(by_progress(b.samples, k, took), flush=True)
    rru, wru, keys = b.capacity(job, 4)
    hot, units = max(keys.items(), key=lambda kv: kv[1]) if keys else ("-", 0.0)
    rate = k / took
    print(f"coordination (capacity meter, DynamoDB size rules): {wru / k * 1000:.2f} WRU and "
          f"{rru / k * 1000:.2f} RRU per 1,000 objects; hottest key {hot}: {units / took:.1f} units/s "
          f"at {rate:.0f} objects/s, {units / took * 3500 / rate:.0f} units/s scaled to 3,500 objects/s", flush=True)


def inventory(b, a):
    """Complete runs of 4 tasks whose object list is an S3 Inventory report, CSV then Parquet;
    with `list` among the formats, first the same keys listed, as the peer they are compared to."""
    k = a.inventory_rows
    peer = None
    for fmt in a.inventory_formats.split():
        if fmt == "list":
            s, took, codes, _ = b.full("inventory-peer", 4, k, a.copy_rate)
            peer = s["distinct"] / took
            print(f"peer: the same {k:,} keys listed, 4 tasks: {took:.1f} s, {peer:.0f} copies/s, "
                  f"exit codes {codes}; source LISTs {s['source_lists']}; missing {k - s['distinct']}, "
                  f"copied twice {s['copied_twice']}", flush=True)
            continue
        s, took, codes, _ = b.full(f"inventory-{fmt}", 4, k, a.copy_rate, inventory=fmt)
        rate = s["distinct"] / took
        versus = f", {rate / peer:.2f} x the listed peer" if peer else ""
        ceiling = min(4 * a.concurrency * 1000 / a.latency_ms, a.copy_rate)
        print(f"inventory ({fmt}, {k:,} rows in 10 files), 4 tasks: {took:.1f} s, first copy after "
              f"{s['first_copy_s']:.1f} s, {rate:.0f} copies/s ({rate / ceiling:.2f} of min(in-flight ceiling, "
              f"budget) = {ceiling:.0f}{versus}), exit codes {codes}; source LISTs {s['source_lists']}, "
              f"report GETs {s['inventory_gets']}, destination LISTs {s['lists'] - s['source_lists']}; "
              f"copies refused by their ETag guard {s['precondition_failed']}; "
              f"missing {k - s['distinct']}, copied twice {s['copied_twice']}", flush=True)


def storm(b, a):
    """A complete run of 4 tasks against a prefix budget of a quarter of the usual one."""
    k = a.full_keys
    budget = max(a.copy_rate // 4, 50)
    s, took, codes, _ = b.full("storm", 4, k, budget)
    total = s["copies"] + s["slowdowns"]
    rate = s["distinct"] / took
    print(f"SlowDown storm, prefix budget {budget} copies/s under 4 x {a.concurrency} in flight: "
          f"{took:.1f} s ({rate:.0f} copies/s, {rate / budget:.0%} of the budget), exit codes {codes}; "
          f"missing {k - s['distinct']}; copied twice {s['copied_twice']}; "
          f"503s {s['slowdowns']:,} of {total:,} copy requests ({s['slowdowns'] / max(total, 1):.1%})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
