//! Where policies come from: files (`files`, `jobwarden run --policies DIR`) or the Kubernetes
//! API (`kube`, cluster mode).

pub mod files;
pub mod kube;
