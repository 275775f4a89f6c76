use clap::Parser;
use flowctl::cli::Cli;

fn main() {
    let cli = Cli::parse();
    match cli.command.run() {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("flowctl: error: {err:#}");
            std::process::exit(1);
        }
    }
}
