//! Where policies come from: files (`files`, `jobwarden run --policies DIR`) or the Kubernetes
//! API (`kube`, cluster mode); both run only the policies a `--selector` matches (`selector`),
//! and both report an unusable Secret reference with one error (`secret`).

pub mod files;
pub mod kube;
pub mod secret;
pub mod selector;
