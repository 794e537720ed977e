//! `cola-api`: the one binary of Cola.

use std::process::ExitCode;

use clap::Parser;
use cola_api::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    Cli::parse().run().await
}
