//! The engine: observe GitLab (shared per-project caches), gather the facts candidates need,
//! decide (pure, in `crate::policy`), act within budgets, and report.

pub mod access;
pub mod act;
mod dropped;
pub mod groups;
pub mod inbox;
pub mod ledger;
pub mod observe;
pub mod pacing;
pub mod reconcile;
pub mod report;
pub mod shard;

pub use access::GitLabAccess;
pub use act::{Outcome, OutcomeKind};
pub use ledger::{Ledger, LedgerError};
pub use reconcile::{
    Clock, DEFAULT_GROUP_REFRESH_INTERVAL, Engine, EngineConfig, JobEvent, ReconcileError, RunMode,
    system_clock,
};
pub use report::{
    ActionRecord, FailedTarget, MAX_LISTED_ACTIONS, MAX_LISTED_HELD_BACK, ProjectFailure,
    RunReport, Tally,
};
pub use shard::{Shard, ShardError};
