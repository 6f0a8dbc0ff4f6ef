//! `jobwarden crd`: prints the JobPolicy CustomResourceDefinition.

use std::io::Write;
use std::process::ExitCode;

/// Writes the CRD YAML to `out`.
pub fn run(out: &mut impl Write) -> crate::Result<ExitCode> {
    out.write_all(crate::crd::crd_yaml().as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
