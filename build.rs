//! Records the git commit and the rustc version for `ferry version` (FERRY_GIT_COMMIT and
//! FERRY_RUSTC_VERSION; `unknown` outside a git checkout, as in a Docker build context).

use std::process::Command;

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit = std::env::var("FERRY_GIT_COMMIT")
        .ok()
        .or_else(|| output("git", &["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = output(&rustc, &["--version"]).unwrap_or_else(|| "rustc unknown".into());
    println!("cargo:rustc-env=FERRY_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=FERRY_RUSTC_VERSION={version}");
    println!("cargo:rerun-if-env-changed=FERRY_GIT_COMMIT");
    for path in [".git/HEAD", ".git/refs/heads"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
