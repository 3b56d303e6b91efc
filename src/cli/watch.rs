//! `ferry get -w`: a live progress display per job (objects, bytes, rate, ETA, phase), refreshed
//! every few seconds. Rates come from the difference between two reads of the stored progress.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use super::{CliError, ExitCode, human_bytes, shown_phase, write_table};
use crate::model::Progress;
use crate::store::{Store, StoredJob};

/// One earlier reading of a job's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at_ms: u64,
    pub bytes: u64,
    pub objects: u64,
}

/// Bytes and objects done (copied or found identical).
fn done(p: &Progress) -> (u64, u64) {
    (
        p.bytes_copied + p.bytes_skipped,
        p.objects_copied + p.objects_skipped + p.objects_failed,
    )
}

/// "1h02m", "3m05s", "42s".
pub fn duration_text(secs: u64) -> String {
    match secs {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// The row of one job: NAME PHASE OBJECTS BYTES RATE ETA. Pure.
pub fn row(
    name: &str,
    phase: &str,
    p: &Progress,
    prev: Option<Sample>,
    now_ms: u64,
) -> Vec<String> {
    let (bytes, objects) = done(p);
    let listed = p.objects_listed;
    let objects_text = if listed == 0 {
        "-".to_string()
    } else {
        format!(
            "{objects}/{listed} ({:.0}%)",
            100.0 * objects as f64 / listed as f64
        )
    };
    let bytes_text = format!("{}/{}", human_bytes(bytes), human_bytes(p.bytes_listed));
    let rate = prev.and_then(|s| {
        let dt = now_ms.checked_sub(s.at_ms).filter(|d| *d > 0)? as f64 / 1000.0;
        Some((
            bytes.saturating_sub(s.bytes) as f64 / dt,
            objects.saturating_sub(s.objects) as f64 / dt,
        ))
    });
    let running = matches!(phase, "Running" | "Provisioning");
    let (rate_text, eta_text) = match rate {
        Some((bps, ops)) if running && (bps > 0.0 || ops > 0.0) => {
            let remaining_objects = listed.saturating_sub(objects) as f64;
            let remaining_bytes = p.bytes_listed.saturating_sub(bytes) as f64;
            let eta = if bps > 0.0 && remaining_bytes > 0.0 {
                remaining_bytes / bps
            } else if ops > 0.0 {
                remaining_objects / ops
            } else {
                0.0
            };
            (
                format!("{}/s {ops:.0} obj/s", human_bytes(bps as u64)),
                duration_text(eta.round() as u64),
            )
        }
        _ if running => ("-".into(), "-".into()),
        _ => ("".into(), "".into()),
    };
    vec![
        name.to_string(),
        phase.to_string(),
        objects_text,
        bytes_text,
        rate_text,
        eta_text,
    ]
}

/// Refreshes the display every `interval` until interrupted (or `frames` frames, if given).
pub async fn watch(
    name: Option<&str>,
    store: &Store,
    interval: Duration,
    frames: Option<u32>,
    out: &mut impl Write,
) -> Result<ExitCode, CliError> {
    use std::io::IsTerminal;
    let tty = std::io::stdout().is_terminal();
    let mut prev: HashMap<String, Sample> = HashMap::new();
    let mut shown = 0u32;
    loop {
        let jobs: Vec<StoredJob> = match name {
            Some(n) => vec![store.require_job(n).await?],
            None => store.list_jobs().await?,
        };
        let now = crate::store::runs::now_ms();
        let mut rows = vec![
            ["NAME", "PHASE", "OBJECTS", "BYTES", "RATE", "ETA"]
                .map(String::from)
                .to_vec(),
        ];
        for j in &jobs {
            let p = j
                .job
                .status
                .as_ref()
                .map(|s| s.progress)
                .unwrap_or_default();
            rows.push(row(
                j.name(),
                shown_phase(j),
                &p,
                prev.get(j.name()).copied(),
                now,
            ));
            let (bytes, objects) = done(&p);
            prev.insert(
                j.name().to_string(),
                Sample {
                    at_ms: now,
                    bytes,
                    objects,
                },
            );
        }
        if tty {
            write!(out, "\x1b[H\x1b[2J")?;
        } else if shown > 0 {
            writeln!(out)?;
        }
        writeln!(
            out,
            "{}  (every {} s; Ctrl-C to stop)",
            crate::store::now_rfc3339(),
            interval.as_secs()
        )?;
        write_table(out, &rows)?;
        out.flush()?;
        shown += 1;
        if frames.is_some_and(|f| shown >= f) {
            return Ok(0);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_eta_come_from_two_readings() {
        let p = Progress {
            objects_listed: 1000,
            bytes_listed: 100 << 20,
            objects_copied: 500,
            bytes_copied: 50 << 20,
            ..Progress::default()
        };
        let prev = Sample {
            at_ms: 0,
            bytes: 40 << 20,
            objects: 400,
        };
        let r = row("a", "Running", &p, Some(prev), 10_000);
        assert_eq!(r[2], "500/1000 (50%)");
        assert_eq!(r[4], "1.0 MiB/s 10 obj/s");
        assert_eq!(r[5], "50s", "50 MiB left at 1 MiB/s");
        let first = row("a", "Running", &p, None, 10_000);
        assert_eq!((first[4].as_str(), first[5].as_str()), ("-", "-"));
        let done = row("a", "Succeeded", &p, Some(prev), 10_000);
        assert_eq!((done[4].as_str(), done[5].as_str()), ("", ""));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_text(42), "42s");
        assert_eq!(duration_text(185), "3m05s");
        assert_eq!(duration_text(3720), "1h02m");
    }
}
