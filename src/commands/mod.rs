//! The implementations of the offline commands (`crd`, `check`); `cli` dispatches to them.

pub mod check;
pub mod crd;
