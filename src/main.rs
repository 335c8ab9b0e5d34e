//! The `onecard` binary: parses the command line and hands over to the library.

use clap::Parser;
use onecard::cli::{Cli, Command};
use onecard::config::Config;
use onecard::startup::Application;
use secrecy::ExposeSecret;

/// mimalloc instead of the system allocator: a payment allocates and frees many small
/// buffers across threads (request, JSON, actor messages), and glibc's malloc took ~14 %
/// of the server's CPU under `loadtest pay` (docs/BENCHMARKS.md, fourth run).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e}");
            std::process::exit(2);
        }
    };
    onecard::telemetry::init(config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            for (key, value) in config.describe() {
                println!("{key:>14}  {value}");
            }
            println!("configuration OK");
            Ok(())
        }
        Command::Openapi => {
            println!("{}", onecard::routes::openapi().to_pretty_json()?);
            Ok(())
        }
        Command::Migrate => actix_web::rt::System::new().block_on(async {
            let store = onecard_schema::open(config.database_url.expose_secret(), 1).await?;
            println!("migrations applied ({})", store.engine());
            Ok(())
        }),
        Command::Serve => actix_web::rt::System::new().block_on(async {
            // Every websocket is a socket: use all the descriptors the system allows.
            match rlimit::increase_nofile_limit(u64::MAX) {
                Ok(n) => tracing::info!(nofile = n, "open file limit"),
                Err(e) => tracing::warn!(error = %e, "could not raise the open file limit"),
            }
            // No transparent huge pages for this process. mimalloc asks for them on its
            // arenas, so the first touch of fresh memory zeroed 2 MiB at once on whichever
            // thread allocated, the commit thread among them, and every payment waiting on
            // that thread waited too (p99 at 64 tills 7–10 ms without, 10–15 ms with;
            // docs/BENCHMARKS.md, thirty-sixth run).
            #[cfg(target_os = "linux")]
            if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
                tracing::warn!(error = %e, "could not turn off transparent huge pages");
            }
            let app = Application::build(config).await?;
            if let Some(token) = &app.generated_root_token {
                // Printed once, on the operator's console only (never logged).
                eprintln!("\nroot token (shown once, also written to the data dir as root-token):\n  {token}\n");
            }
            app.run_until_stopped().await?;
            tracing::info!("stopped");
            Ok(())
        }),
    }
}
