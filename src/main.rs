//! The `mongoferry` binary: parses the command line, sets up logging, hands over to the library.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    // Before any thread exists, so that every thread allocates from the same arena.
    limit_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// glibc gives a thread that finds an arena locked an arena of its own (up to 8 per core), and
/// each arena keeps the pages of what was freed in it. Documents are read on one thread and freed
/// on another, so with the default the RSS was about twice the live heap (23 MiB live, 53-61 MiB
/// RSS; one arena: 38 MiB, issue 14). `MALLOC_ARENA_MAX`, when set, wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tunable of the C allocator, and no other thread runs yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

async fn run() -> std::process::ExitCode {
    let cli = match mongoferry::cli::Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version.
        Err(e) if !e.use_stderr() => e.exit(),
        // Clap quotes a value it refuses: never a password in it.
        Err(e) => {
            let message = if std::io::stderr().is_terminal() {
                e.render().ansi().to_string()
            } else {
                e.render().to_string()
            };
            eprint!("{}", mongoferry::cli::without_input_secrets(&message));
            return std::process::ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
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
