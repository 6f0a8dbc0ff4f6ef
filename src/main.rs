use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    jobwarden::memory::configure_allocator();
    let cli = jobwarden::cli::Cli::parse();
    jobwarden::telemetry::init(cli.log_format, cli.default_log_level());
    match jobwarden::cli::dispatch(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}
