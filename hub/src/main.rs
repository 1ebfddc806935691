//! The `raccordo` binary: see `raccordo --help`.

#![forbid(unsafe_code)]

use clap::Parser;
use raccordo::cli::{Cli, run};

// glibc's allocator was a fifth of the CPU of a folder listing (many small
// strings and maps per practice) and its arenas grow per thread; mimalloc is
// faster at this pattern and returns memory more readily.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    raccordo::telemetry::init(cli.log_format, cli.color.for_stderr());
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
