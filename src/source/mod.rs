//! Where policies come from: files (`files`) — the cluster source lives beside it.

pub mod files;
