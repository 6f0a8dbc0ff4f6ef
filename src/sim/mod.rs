//! SKELETON — replaced by the simulator implementation.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {}
pub async fn run_simulate(_args: SimulateArgs) -> crate::Result<std::process::ExitCode> {
    Err(crate::Error::InvalidArgument(
        "simulator not built yet".into(),
    ))
}
