//! jobwarden: a Kubernetes-style controller that keeps GitLab CI jobs healthy.
//!
//! The flow of one policy run: compile (spec → checked policy) → observe (GitLab jobs, cached) →
//! decide (pure) → act (GitLab calls, budgets, dry-run) → report (status, metrics, log).

pub mod cli;
pub mod commands;
pub mod crd;
pub mod engine;
pub mod gitlab;
pub mod memory;
pub mod metrics;
pub mod policy;
pub mod server;
pub mod sim;
pub mod source;
pub mod sync;
pub mod telemetry;
pub mod webhook;

/// The crate's top-level error, for the commands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Cluster(#[from] crate::source::kube::ClusterError),
    #[error(transparent)]
    Ledger(#[from] crate::engine::LedgerError),
    #[error(transparent)]
    Webhook(#[from] crate::webhook::WebhookError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
