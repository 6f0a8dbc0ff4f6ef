//! The implementations of the offline commands (`crd`, `check`); `cli` dispatches to them.

pub mod crd;
