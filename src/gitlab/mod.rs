//! The GitLab Jobs API client.

pub mod models;
pub mod telemetry;
