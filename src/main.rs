//! The `mongoferry` binary: parses the command line, sets up logging, hands over to the library.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = mongoferry::cli::Cli::parse();
    let filter = EnvFilter::try_from_env("MONGOFERRY_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,mongodb=warn"))
        // At their most verbose levels the HTTP libraries trace request heads, where the API
        // token travels: never that, whatever MONGOFERRY_LOG asks for.
        .add_directive("hyper=info".parse().expect("a valid directive"))
        .add_directive("h2=info".parse().expect("a valid directive"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    mongoferry::cli::run(cli).await
}
