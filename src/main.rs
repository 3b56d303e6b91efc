//! The `ferry` binary: parses arguments, sets up logging, wires the layers together.

use clap::Parser;
use ferry::cli::{self, Cli, CliError, LogFormat};

/// Logs on stderr. The long-running parts log at info; the CLI's verbs keep the SDK's own
/// warnings (each provider of the credential chain that found nothing, as multi-line debug
/// structures) to themselves: what failed reaches the user as one error line.
fn init_logging(format: LogFormat, long_running: bool) {
    let default = if long_running {
        "info,aws_config=warn,aws_smithy_runtime=warn"
    } else {
        "warn,aws_config=error,aws_smithy_runtime=error"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colors only on a terminal: Fargate's awslogs driver and the tests read stderr as a file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() {
    let cli = Cli::parse();
    let long_running = matches!(
        cli.command,
        cli::Command::Operator(_) | cli::Command::Worker | cli::Command::LocalAgent(_)
    );
    init_logging(cli.global.log_format, long_running);
    let mut out = std::io::stdout().lock();
    let result = match cli::run_offline(&cli.command, &cli.global, &mut out) {
        Some(r) => r,
        None => {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            runtime.block_on(async {
                match ferry::aws::load_config(&cli.global.aws).await {
                    Ok(config) => {
                        cli::run(&cli.command, &config, &cli.global.table, &mut out).await
                    }
                    Err(e) => Err(CliError::Failed(e.to_string())),
                }
            })
        }
    };
    let code = match result {
        Ok(code) => code,
        // A closed pipe (`ferry get | head`) is not an error worth reporting.
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code(&cli.command)
        }
    };
    std::process::exit(code);
}
