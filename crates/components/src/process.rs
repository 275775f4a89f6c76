//! What every bundled component's `main` does around its work: logs to stderr, and an exit
//! code from how the work ended.

/// Logs to stderr at `RUST_LOG` (default `info`); coloured only on a terminal, since under a
/// supervisor the lines go to a journal or a log.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Exits 0 on success, else prints `NAME: error` and exits 1. Not waiting for the runtime: a
/// call still on a blocking thread (a decode, a local read) must not delay the exit.
pub fn exit(name: &str, result: anyhow::Result<()>) -> ! {
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            1
        }
    };
    std::process::exit(code)
}
