//! The command line: `onecard [serve]`, `onecard migrate`, `onecard check-config`.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "onecard", version, about = "OneCard e-card platform server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Validate the configuration from the environment and exit.
    CheckConfig,
    /// Print the OpenAPI document and exit.
    Openapi,
}
