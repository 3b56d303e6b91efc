//! Test support: a moto server per test on a free loopback port, killed on drop; SDK
//! configurations and `ferry` commands pointed at it; polling with a deadline.

#![allow(dead_code)]

pub mod faults;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `ferry` binary built for these tests.
pub fn ferry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry")
}

/// A running moto server. Dropping it kills the server.
pub struct Emulator {
    child: Child,
    pub endpoint: String,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl Emulator {
    /// Starts a threaded moto server behind the strict layer (which keeps DynamoDB conditional
    /// writes atomic, as on AWS).
    pub fn start() -> Emulator {
        Emulator::launch()
    }

    fn launch() -> Emulator {
        let mut last_error = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = free_port();
            let log = dir.path().join(format!("moto-{port}.log"));
            let log_file = std::fs::File::create(&log).expect("moto log file");
            let mut cmd = Command::new("bash");
            cmd.arg(root().join("scripts/emulator.sh"))
                .arg("serve")
                .arg(port.to_string());
            cmd.env("FERRY_EMULATOR_EXIT_WITH_PARENT", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file);
            let child = cmd.spawn().expect("start scripts/emulator.sh serve");
            let mut emu = Emulator {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
                port,
                log,
                _dir: dir,
            };
            match emu.wait_ready(Duration::from_secs(60)) {
                Ok(()) => return emu,
                Err(e) => last_error = e,
            }
        }
        panic!("moto did not start: {last_error}");
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}: {}", self.log_tail()));
            }
            if http(self.port, "GET", "/moto-api/", "", "").is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("no answer within {limit:?}: {}", self.log_tail()))
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Calls moto's control API (`/moto-api/...`), returning the body.
    pub fn control(&self, method: &str, path: &str, content_type: &str, body: &str) -> String {
        http(self.port, method, path, content_type, body)
            .unwrap_or_else(|e| panic!("moto-api {path}: {e}"))
    }

    /// Clears all emulated state.
    pub fn reset(&self) {
        self.control("POST", "/moto-api/reset", "", "");
    }

    /// Switches on ECS faults moto never produces (`scripts/strict_aws/ecs.py`):
    /// `describeLagMs`, `placementFailures`, `placementReason`; and `stoppedTaskRetentionSeconds`,
    /// how long a stopped task stays known (3,600, as on AWS).
    pub fn strict_ecs_faults(&self, faults: serde_json::Value) {
        http(
            self.port,
            "POST",
            "/ferry-strict/ecs",
            "application/json",
            &faults.to_string(),
        )
        .unwrap_or_else(|e| panic!("setting ECS faults {faults}: {e}"));
    }

    /// Lowers the requests per second each bucket grants before S3's 503 SlowDown
    /// (`scripts/strict_aws/s3.py`, `s3-prefix-request-rate`): `writesPerSecond`,
    /// `readsPerSecond`.
    pub fn strict_s3_rates(&self, rates: serde_json::Value) {
        http(
            self.port,
            "POST",
            "/ferry-strict/s3",
            "application/json",
            &rates.to_string(),
        )
        .unwrap_or_else(|e| panic!("setting S3 request rates {rates}: {e}"));
    }

    /// Switches rules of the strict AWS layer (scripts/strict_aws/) off, to show what they
    /// catch. Every rule is on when the emulator starts.
    pub fn strict_off(&self, rules: &[&str]) {
        let body = serde_json::json!({ "off": rules }).to_string();
        http(
            self.port,
            "POST",
            "/ferry-strict/rules",
            "application/json",
            &body,
        )
        .unwrap_or_else(|e| panic!("switching off strict rules {rules:?}: {e}"));
    }

    /// Explicit denies of the strict layer (`iam-deny-list`): `(principal, action)` pairs, e.g.
    /// `("accesskey:test", "ecs:ListTasks")`; an empty list lifts them.
    pub fn strict_deny(&self, entries: &[(&str, &str)]) {
        let deny: Vec<serde_json::Value> = entries
            .iter()
            .map(|(p, a)| serde_json::json!({ "principal": p, "action": a }))
            .collect();
        let body = serde_json::json!({ "deny": deny }).to_string();
        http(
            self.port,
            "POST",
            "/ferry-strict/deny",
            "application/json",
            &body,
        )
        .unwrap_or_else(|e| panic!("setting strict denies {entries:?}: {e}"));
    }

    /// How many requests the strict layer's `rule` has refused so far.
    pub fn strict_rejections(&self, rule: &str) -> u64 {
        let body = http(self.port, "GET", "/ferry-strict/rules", "", "")
            .unwrap_or_else(|e| panic!("reading the strict rules: {e}"));
        let rules: serde_json::Value = serde_json::from_str(&body).expect("strict rules JSON");
        rules[rule]["rejected"]
            .as_u64()
            .unwrap_or_else(|| panic!("no strict rule {rule}: {body}"))
    }

    /// Every STS session the emulator issued, with the session policy it was assumed with.
    pub fn strict_sessions(&self) -> serde_json::Map<String, serde_json::Value> {
        let body = http(self.port, "GET", "/ferry-strict/sessions", "", "")
            .unwrap_or_else(|e| panic!("reading the STS sessions: {e}"));
        serde_json::from_str(&body).expect("sessions JSON")
    }

    /// Every request the emulator received since the rig started (the strict layer's log):
    /// `time` (epoch seconds, the server's clock), `service`, `operation`, `write`, `key` (a
    /// DynamoDB write's partition key), `bucket` (S3).
    pub fn strict_requests(&self) -> Vec<serde_json::Value> {
        let body = http(self.port, "GET", "/ferry-strict/requests", "", "")
            .unwrap_or_else(|e| panic!("reading the request log: {e}"));
        serde_json::from_str(&body).expect("requests JSON")
    }

    /// An SDK configuration with static test credentials (account 123456789012).
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .credentials_provider(Credentials::new("test", "test", None, None, "ferry-tests"))
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .load()
            .await
    }

    /// The environment a `ferry` process needs to talk to this emulator only.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
            ("FERRY_TABLE", "ferry"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// `ferry ARGS` against this emulator.
    pub fn ferry(&self, args: &[&str]) -> Output {
        run_ferry(args, &self.env())
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a `ferry` process did.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the `ferry` binary with a clean AWS environment plus `env`.
pub fn run_ferry(args: &[&str], env: &[(String, String)]) -> Output {
    run_ferry_with_input(args, env, None)
}

/// As [`run_ferry`], with `input` on standard input.
pub fn run_ferry_with_input(
    args: &[&str],
    env: &[(String, String)],
    input: Option<&str>,
) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(ferry_bin());
    cmd.args(args).current_dir(root());
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("FERRY_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("run ferry");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(text) = input {
        stdin.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("run ferry");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A minimal HTTP/1.1 request to 127.0.0.1:port (moto's control API needs nothing more).
fn http(
    port: u16,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let ct = if content_type.is_empty() {
        String::new()
    } else {
        format!("Content-Type: {content_type}\r\n")
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{ct}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    if status.starts_with('2') {
        Ok(body)
    } else {
        Err(format!("HTTP {status}: {body}"))
    }
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// GET http://127.0.0.1:port/path (the operator's endpoints).
pub fn http_get(port: u16, path: &str) -> Result<String, String> {
    http(port, "GET", path, "", "")
}

/// The value of one Prometheus sample (`name{labels}` exactly as exposed), if present.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == series).then(|| v.parse().ok()).flatten()
    })
}

impl Emulator {
    /// Runs `scripts/local-aws.py` (boto3 from .venv) against this emulator; returns stdout.
    pub fn local_aws(&self, args: &[&str]) -> String {
        let out = Command::new(root().join(".venv/bin/python"))
            .arg(root().join("scripts/local-aws.py"))
            .arg("--endpoint")
            .arg(&self.endpoint)
            .args(args)
            .output()
            .expect("run local-aws.py");
        assert!(
            out.status.success(),
            "local-aws.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test file");
    p
}

impl Emulator {
    /// An SDK configuration acting as `account` (AssumeRole into a role there).
    pub async fn account_config(&self, account: &str) -> SdkConfig {
        self.role_config(&format!("arn:aws:iam::{account}:role/test-admin"))
            .await
    }

    /// An SDK configuration acting as a session of `role_arn` (session `ferry-tests`).
    pub async fn role_config(&self, role_arn: &str) -> SdkConfig {
        self.session_config(role_arn, None).await
    }

    /// An SDK configuration acting as a session of `role_arn`, assumed with `session_policy`.
    pub async fn session_config(&self, role_arn: &str, session_policy: Option<&str>) -> SdkConfig {
        let base = self.sdk_config().await;
        let mut builder =
            aws_config::sts::AssumeRoleProvider::builder(role_arn).session_name("ferry-tests");
        if let Some(p) = session_policy {
            builder = builder.policy(p);
        }
        let provider = builder.configure(&base).build().await;
        base.into_builder()
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(provider),
            )
            .build()
    }

    /// The environment of a `ferry worker` for `job`/`run` as task `task`.
    pub fn worker_env(&self, job: &str, run: &str, task: &str) -> Vec<(String, String)> {
        let mut env = self.env();
        env.extend(
            [
                ("FERRY_JOB", job),
                ("FERRY_RUN", run),
                ("FERRY_TASK", task),
                ("FERRY_S3_FORCE_PATH_STYLE", "true"),
                ("FERRY_LOG", "info"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        env
    }
}

/// An S3 client in `region` with the configuration's credentials, path-style for moto.
pub fn s3(config: &SdkConfig, region: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(config)
        .region(Region::new(region.to_string()))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Runs a tool to completion: its exit code (-1 if killed) and its stdout and stderr together.
pub fn tool_output(cmd: &mut Command, what: &str) -> (i32, String) {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Sends a signal by name (`STOP`, `CONT`, `TERM`, `KILL`) to a process.
pub fn signal_pid(pid: u32, name: &str) {
    use nix::sys::signal::{Signal, kill};
    let sig: Signal = format!("SIG{name}").parse().expect("a signal name");
    let target = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid"));
    kill(target, sig).unwrap_or_else(|e| panic!("kill -s {name} {pid}: {e}"));
}

/// A background `ferry` process, killed when dropped so a failing test leaves nothing behind.
pub struct Proc(pub Child);

impl Proc {
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`).
    pub fn signal(&self, name: &str) {
        signal_pid(self.id(), name);
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.kill();
        }
    }
}

/// Starts `ferry ARGS` in the background with a clean AWS environment plus `env`; stderr goes to
/// `log`.
pub fn spawn_ferry(args: &[&str], env: &[(String, String)], log: &Path) -> Proc {
    let mut cmd = Command::new(ferry_bin());
    cmd.args(args).current_dir(root());
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("FERRY_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("worker log"));
    Proc(cmd.spawn().expect("spawn ferry"))
}

/// Waits for a child with a deadline; kills it and panics (with its log) on timeout.
pub async fn wait_child(child: &mut Proc, limit: Duration, log: &Path) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            child.kill();
            panic!(
                "process did not exit within {limit:?}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
