use clap::Parser;
use flowctl::cli::Cli;

const EXIT_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

fn main() {
    let cli = Cli::parse();
    let code = match cli.command.run() {
        Ok(code) => code,
        Err(err) => {
            flowctl::stderr_line!("flowctl: error: {err:#}");
            1
        }
    };
    // The last lines reach a stderr that is read; one that is not does not hold the exit.
    flowctl::stderr::flush(EXIT_FLUSH);
    std::process::exit(code);
}
