//! `regserve`: parse the command line, then run the command. All logic lives in the library.

use clap::Parser;
use regserve::config::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,ort=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Serve(args) => regserve::cli::serve(&cli.global, args),
        Command::Models(cmd) => regserve::cli::models(&cli.global, cmd),
        Command::Predict(args) => regserve::cli::predict(&cli.global, args),
        Command::Server(args) => regserve::cli::server(&cli.global, args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
