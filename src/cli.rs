//! The command line: `jobwarden <command>`. Every flag can also be set from an environment
//! variable (shown in `--help`).

use crate::telemetry::LogFormat;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "jobwarden",
    version,
    about = "Keeps GitLab CI jobs healthy, the Kubernetes way."
)]
pub struct Cli {
    /// Log line format (level from RUST_LOG).
    #[arg(long, global = true, env = "JOBWARDEN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a simulated GitLab Jobs API with a generated fleet (for tests, demos, benchmarks).
    Simulate(crate::sim::SimulateArgs),
    /// Run every JobPolicy in a directory against GitLab, each on its interval.
    Run(crate::commands::run::RunArgs),
    /// One dry pass: show what would be done to which job, and why.
    Plan(crate::commands::plan::PlanArgs),
    /// The built-in GitLab simulator plus the example policies: actions live, metrics served.
    Demo(crate::commands::demo::DemoArgs),
    /// Print the JobPolicy CustomResourceDefinition (YAML), e.g. `jobwarden crd | kubectl apply -f -`.
    Crd,
    /// Validate JobPolicy manifests offline (files or directories); exit code 1 if any is invalid.
    Check(crate::commands::check::CheckArgs),
}

impl Cli {
    /// The log level when `RUST_LOG` is unset: `info`, but `warn` for the demo, whose own lines
    /// already show every action and where everything listens.
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Demo(_) => "warn",
            _ => "info",
        }
    }
}

/// Runs the chosen command; the exit code is the command's verdict.
pub async fn dispatch(cli: Cli) -> crate::Result<ExitCode> {
    match cli.command {
        Command::Simulate(args) => crate::sim::run_simulate(args).await,
        Command::Run(args) => crate::commands::run::run(args).await,
        Command::Plan(args) => crate::commands::plan::run(args).await,
        Command::Demo(args) => crate::commands::demo::run(args).await,
        Command::Crd => crate::commands::crd::run(&mut std::io::stdout().lock()),
        Command::Check(args) => crate::commands::check::run(
            &args,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        ),
    }
}
