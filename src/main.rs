//! The `mongoferry` binary: parses the command line, sets up logging, hands over to the library.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = mongoferry::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("MONGOFERRY_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,mongodb=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    mongoferry::cli::run(cli).await
}
