//! Where policies come from: files (`files`, `jobwarden run --policies DIR`) or the Kubernetes
//! API (`kube`, cluster mode); both run only the policies a `--selector` matches (`selector`).

pub mod files;
pub mod kube;
pub mod selector;
