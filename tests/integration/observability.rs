//! Observability: the Grafana dashboard against the metrics ferry exports and a real Prometheus
//! (Debian's `prometheus`), and the operator's and workers' logs.

use std::process::{Command, Stdio};
use std::time::Duration;

use ferry::model::Phase;

use crate::operator::{job_yaml, objects, rig};
use crate::support::{Proc, free_port, http_get, root};
use crate::worker::seed;

/// Every PromQL expression of the dashboard.
fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("dashboards/ferry.json")).expect("dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        for t in panel["targets"].as_array().expect("targets") {
            out.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    out
}

/// (name, expression) of every alerting rule in dashboards/alerts.yaml.
fn alert_rules() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("dashboards/alerts.yaml")).expect("alerts");
    let doc: serde_json::Value = serde_saphyr::from_str(&text).expect("alerts are YAML");
    doc["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .map(|r| {
            let name = r["alert"].as_str().expect("alert name").to_string();
            let expr = r["expr"]
                .as_str()
                .expect("expr")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            (name, expr)
        })
        .collect()
}

fn promtool(args: &[&str]) -> (bool, String) {
    let (code, text) = crate::support::tool_output(
        Command::new("promtool")
            .args(args)
            .current_dir(root().join("dashboards")),
        "promtool (Debian package `prometheus`) is installed",
    );
    (code == 0, text)
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let (ok, text) = promtool(&["check", "rules", "alerts.yaml"]);
    assert!(ok, "promtool check rules: {text}");
    let (ok, text) = promtool(&["test", "rules", "alerts.test.yaml"]);
    assert!(ok, "promtool test rules: {text}");
    let names: Vec<String> = alert_rules().into_iter().map(|(n, _)| n).collect();
    for wanted in [
        "FerryJobFailed",
        "FerrySyncStale",
        "FerryNoLeader",
        "FerryTwoLeaders",
        "FerryReconcileErrors",
        "FerryFailedObjects",
        "FerryThroughputDrop",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "no {wanted} in {names:?}"
        );
        let tests =
            std::fs::read_to_string(root().join("dashboards/alerts.test.yaml")).expect("tests");
        assert!(
            tests.contains(&format!("alertname: {wanted}")),
            "{wanted} has no promtool test"
        );
    }
}

#[test]
fn every_alert_names_only_exported_metrics_and_has_a_dashboard_panel() {
    let text = std::fs::read_to_string(root().join("dashboards/ferry.json")).expect("dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    for (name, expr) in alert_rules() {
        for n in metric_names(&expr) {
            assert!(
                ferry::metrics::NAMES.contains(&n.as_str()),
                "{name}: {n} is not exported"
            );
        }
        let panel = panels
            .iter()
            .find(|p| p["title"] == name.as_str())
            .unwrap_or_else(|| panic!("no dashboard panel for {name}"));
        let shown = panel["targets"][0]["expr"]
            .as_str()
            .expect("expr")
            .replace("job=~\"$installation\",", "")
            .replace("{job=~\"$installation\"}", "");
        assert_eq!(shown, expr, "the {name} panel shows the alert's expression");
    }
    let units: Vec<&str> = panels
        .iter()
        .filter(|p| {
            p["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("Remaining"))
        })
        .map(|p| p["fieldConfig"]["defaults"]["unit"].as_str().expect("unit"))
        .collect();
    assert_eq!(
        units,
        ["short", "bytes"],
        "objects and bytes have panels of their own units"
    );
}

/// Metric names an expression uses: ferry's own and the process collector's (histogram series
/// reduced to their family).
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| t.starts_with("ferry_") || t.starts_with("process_"))
        .map(|name| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| f.ends_with("_seconds"))
                .unwrap_or(name)
                .to_string()
        })
        .collect()
}

#[test]
fn every_dashboard_expression_names_only_metrics_ferry_exports() {
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 10, "{exprs:?}");
    for e in &exprs {
        let names = metric_names(e);
        assert!(!names.is_empty(), "no ferry metric in {e}");
        for n in names {
            assert!(
                ferry::metrics::NAMES.contains(&n.as_str()),
                "{n} (in `{e}`) is not exported; exported: {:?}",
                ferry::metrics::NAMES
            );
        }
    }
    let all = dashboard_exprs().join(" ");
    for needed in [
        "ferry_copied_bytes_total",
        "ferry_remaining_bytes",
        "ferry_failed_objects_total",
        "ferry_task_restarts_total",
        "ferry_drift_corrections_total",
        "ferry_reconcile_duration_seconds",
        "ferry_reconcile_errors_total",
        "ferry_aws_requests_total",
        "ferry_workqueue_depth",
        "ferry_last_success_timestamp_seconds",
    ] {
        assert!(all.contains(needed), "the dashboard shows no {needed}");
    }
    for e in &exprs {
        assert!(
            e.contains("job=~\"$installation\""),
            "`{e}` ignores the installation variable"
        );
    }
}

/// Grafana's variables replaced by values Prometheus accepts.
fn concrete(expr: &str) -> String {
    expr.replace("$copyjob", ".*")
        .replace("$installation", ".*")
        .replace("$__rate_interval", "30s")
        .replace("$__range", "1h")
}

fn query(port: u16, expr: &str) -> serde_json::Value {
    let q: String =
        percent_encoding::utf8_percent_encode(expr, percent_encoding::NON_ALPHANUMERIC).to_string();
    let body = http_get(port, &format!("/api/v1/query?query={q}"))
        .unwrap_or_else(|e| panic!("query `{expr}`: {e}"));
    serde_json::from_str(&body).expect("prometheus answers JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_sees_throughput_and_evaluates_every_dashboard_expression() {
    let mut r = rig().await;
    seed(&r.src, SRC_OBJECTS_BUCKET, objects(150, "v1")).await;
    let (_op, op_port) = r.operator("op", &[]);
    let _agent = r.agent(None);

    let (_prom, prom_port) = start_prometheus(r.dir.path(), op_port).await;

    // Slow enough that several scrapes see the copy going on.
    r.apply(
        "watched",
        &job_yaml("watched", "op-dest-watched", ", maxRequestsPerSecond: 20"),
    );
    r.until(
        "Prometheus to see bytes copied per second > 0",
        Duration::from_secs(120),
        || async {
            let v = query(
                prom_port,
                r#"sum(rate(ferry_copied_bytes_total{copyjob="watched"}[10s]))"#,
            );
            let value = v["data"]["result"][0]["value"][1]
                .as_str()?
                .parse::<f64>()
                .ok()?;
            (value > 0.0).then_some(())
        },
    )
    .await;
    r.until_phase("watched", Phase::Succeeded, Duration::from_secs(120))
        .await;
    for expr in dashboard_exprs() {
        let v = query(prom_port, &concrete(&expr));
        assert_eq!(v["status"], "success", "`{expr}`: {v}");
    }
    r.until(
        "Prometheus to scrape the final count",
        Duration::from_secs(30),
        || async {
            let v = query(
                prom_port,
                r#"max(ferry_copied_objects_total{copyjob="watched"})"#,
            );
            (v["data"]["result"][0]["value"][1] == "150").then_some(())
        },
    )
    .await;
}

/// Starts Debian's Prometheus scraping `127.0.0.1:target` every second and waits until it is
/// ready (it opens its port only after loading its TSDB, which takes seconds on a loaded
/// machine). A port taken between `free_port` and the bind is retried on another port.
async fn start_prometheus(dir: &std::path::Path, target: u16) -> (Proc, u16) {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nscrape_configs:\n  - job_name: ferry\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
        ),
    )
    .expect("config");
    let mut failures = Vec::new();
    for attempt in 0..3 {
        let port = free_port();
        let log_path = dir.join(format!("prometheus-{attempt}.log"));
        let mut prom = Proc(
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join(format!("tsdb-{attempt}")).display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log_path).expect("log"))
                .spawn()
                .expect("prometheus (Debian package `prometheus`) is installed"),
        );
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if http_get(port, "/-/ready").is_ok() {
                return (prom, port);
            }
            if let Ok(Some(status)) = prom.0.try_wait() {
                failures.push(format!("exited with {status}: {}", log()));
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "prometheus not ready within 60 s: {}",
                log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    panic!("prometheus did not start: {failures:#?}");
}

const SRC_OBJECTS_BUCKET: &str = "op-source";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_json_with_a_span_per_reconcile_and_never_contain_credentials() {
    const SECRET: &str = "ferrySecretKey0123456789abcdefSECRET";
    const TOKEN: &str = "ferrySessionToken0123456789abcdefTOKEN";
    let mut r = rig().await;
    seed(&r.src, SRC_OBJECTS_BUCKET, objects(20, "v1")).await;
    r.extra_env = vec![
        ("AWS_SECRET_ACCESS_KEY".into(), SECRET.into()),
        ("AWS_SESSION_TOKEN".into(), TOKEN.into()),
        ("FERRY_LOG".into(), "debug".into()),
        ("FERRY_LOG_FORMAT".into(), "json".into()),
    ];
    let (_op, _) = r.operator("op", &[]);
    let _agent = r.agent(None);
    r.apply("quiet", &job_yaml("quiet", "op-dest-quiet", ""));
    r.until_phase("quiet", Phase::Succeeded, Duration::from_secs(120))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut lines = 0;
    let mut reconcile_spans = 0;
    for log in &r.logs {
        let text = std::fs::read_to_string(log).expect("log");
        assert!(
            !text.contains(SECRET),
            "{} contains the secret key",
            log.display()
        );
        assert!(
            !text.contains(TOKEN),
            "{} contains the session token",
            log.display()
        );
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            lines += 1;
            if v["span"]["name"] == "reconcile" {
                assert_eq!(v["span"]["job"], "quiet", "{line}");
                assert!(v["span"]["generation"].is_number(), "{line}");
                reconcile_spans += 1;
            }
        }
    }
    assert!(lines > 50, "debug logs were written ({lines} lines)");
    assert!(
        reconcile_spans > 0,
        "log lines inside a reconcile carry its span"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_w_shows_objects_rate_eta_and_phase_while_a_job_runs() {
    let mut r = rig().await;
    seed(&r.src, SRC_OBJECTS_BUCKET, objects(120, "v1")).await;
    let (_op, _) = r.operator("op", &[]);
    let _agent = r.agent(None);
    r.apply(
        "shown",
        &job_yaml("shown", "op-dest-shown", ", maxRequestsPerSecond: 20"),
    );
    let out_path = r.dir.path().join("watch.out");
    let mut cmd = Command::new(crate::support::ferry_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("FERRY_") {
            cmd.env_remove(k);
        }
    }
    let _watch = Proc(
        cmd.args(["get", "-w", "--interval", "1", "--frames", "120"])
            .envs(r.emu.env())
            .stdout(std::fs::File::create(&out_path).expect("out"))
            .stderr(Stdio::null())
            .spawn()
            .expect("ferry get -w"),
    );
    r.until(
        "a frame with a rate and an ETA for the running job",
        Duration::from_secs(120),
        || async {
            let text = std::fs::read_to_string(&out_path).ok()?;
            text.lines()
                .any(|l| {
                    l.starts_with("shown ")
                        && l.contains("Running")
                        && l.contains("obj/s")
                        && l.ends_with('s')
                })
                .then_some(())
        },
    )
    .await;
    r.until(
        "a frame showing the job Succeeded with every object",
        Duration::from_secs(120),
        || async {
            let text = std::fs::read_to_string(&out_path).ok()?;
            text.lines()
                .any(|l| {
                    l.starts_with("shown ")
                        && l.contains("Succeeded")
                        && l.contains("120/120 (100%)")
                })
                .then_some(())
        },
    )
    .await;
    let text = std::fs::read_to_string(&out_path).expect("output");
    assert!(
        text.lines()
            .any(|l| l.starts_with("NAME") && l.contains("RATE") && l.contains("ETA"))
    );
}
