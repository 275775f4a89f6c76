//! `ttp-processor`: Stellar token-transfer events. Without a subcommand it runs as a
//! pipeline component (configured by environment, like the Go ttp-processor); `extract`
//! turns ledger files into JSONL.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flowctl_components::processor::{
    config::ComponentConfig,
    extract,
    registration::{Registration, ENV_PREFIX},
    server::Component,
};
use flowctl_components::shutdown::Shutdown;
use stellar_ledgers::LedgerRange;

#[derive(Parser)]
#[command(
    name = "ttp-processor",
    version,
    about = "Stellar token-transfer events (CAP-67 / SEP-41)",
    after_help = "Without a command it runs as a pipeline component, configured by environment \
like the Go ttp-processor: it reads ledgers from RawLedgerService at SOURCE_SERVICE_ADDRESS \
(or LIVE_SOURCE_ENDPOINT) and serves EventService.GetTTPEvents on PORT (or GRPC_PORT), bound \
to LISTEN_ADDR (loopback by default); NETWORK_PASSPHRASE is required. The flowctl variables \
(ENABLE_FLOWCTL, FLOWCTL_ENDPOINT, HEALTH_PORT, …) register it with the control plane."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Write the events of ledger files or a data lake to stdout as JSON lines.
    Extract {
        /// Network passphrase (hashes transactions, derives asset contract ids).
        #[arg(long, env = "NETWORK_PASSPHRASE")]
        network_passphrase: String,
        /// First ledger (inclusive); required for a data lake.
        #[arg(long)]
        start: Option<u32>,
        /// Last ledger (inclusive).
        #[arg(long)]
        end: Option<u32>,
        /// Base64 lines, raw XDR, zstd batch or frame files, or data-lake directories.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOG_LEVEL")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Some(Command::Extract {
            network_passphrase,
            start,
            end,
            inputs,
        }) => {
            if let (Some(s), Some(e)) = (start, end) {
                if e < s {
                    eprintln!("error: --end {e} is before --start {s}");
                    return ExitCode::from(2);
                }
            }
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
            match extract::extract(
                &network_passphrase,
                &inputs,
                LedgerRange::new(start, end),
                &mut out,
            ) {
                Ok(_) => ExitCode::SUCCESS,
                Err(extract::ExtractError::Write(e))
                    if e.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => run_component(),
    }
}

fn run_component() -> ExitCode {
    let config = match ComponentConfig::from_env(|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let shutdown = Shutdown::on_signals()?;
        let on_error = flowctl_sdk::OnError::from_env(ENV_PREFIX)?;
        let letters = flowctl_sdk::DeadLetters::new(&flowctl_sdk::Config::from_env(ENV_PREFIX)?);
        let set_aside = (on_error == flowctl_sdk::OnError::DeadLetter).then(|| letters.clone());
        let component = Component::bind(&config, set_aside).await?;
        let registration =
            Registration::start(component.metrics(), &component.readiness(), letters).await?;
        tracing::info!(
            listen = %component.local_addr(),
            upstream = %config.upstream,
            health = ?registration.health_addr(),
            "ttp-processor serving"
        );
        let served = component.serve(shutdown).await;
        registration.shutdown().await;
        served
    });
    // A ledger still being processed on a blocking thread is not waited for.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
