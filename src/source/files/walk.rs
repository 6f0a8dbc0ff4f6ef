//! The files to read: each file named, whatever its extension, and the visible `*.yaml`/`*.yml`
//! regular files of each directory named, in name order; and one such file read within the
//! bounds `bounds` sets.

use super::ManifestError;
use super::bounds::{MAX_MANIFEST_BYTES, check_manifest_text};
use std::path::{Path, PathBuf};

/// Reads a manifest file, within bounds: a regular file (a FIFO or a device is never opened),
/// at most [`MAX_MANIFEST_BYTES`], UTF-8, flow collections nested at most
/// [`MAX_FLOW_NESTING`](super::MAX_FLOW_NESTING) deep. The error says which bound.
pub fn read_manifest(file: &Path) -> Result<String, String> {
    use std::io::Read;
    let meta = std::fs::metadata(file).map_err(|err| format!("cannot read: {err}"))?;
    if !meta.is_file() {
        return Err("not a regular file: not read".to_owned());
    }
    if meta.len() > MAX_MANIFEST_BYTES {
        return Err(format!(
            "{} bytes: manifest files are read up to {MAX_MANIFEST_BYTES} bytes (1 MiB)",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|err| format!("cannot read: {err}"))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(format!(
            "grew past {MAX_MANIFEST_BYTES} bytes (1 MiB) while read"
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    check_manifest_text(&text)?;
    Ok(text)
}

/// The files to read: explicit files as given, directories' `*.yaml`/`*.yml` in name order.
pub fn manifest_files(paths: &[PathBuf], errors: &mut Vec<ManifestError>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(err) => {
                errors.push(ManifestError::in_file(path, format!("cannot read: {err}")));
                continue;
            }
        };
        if !meta.is_dir() {
            files.push(path.clone());
            continue;
        }
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(err) => {
                errors.push(ManifestError::in_file(
                    path,
                    format!("cannot list directory: {err}"),
                ));
                continue;
            }
        };
        let mut in_dir: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_manifest_file(p))
            .collect();
        in_dir.sort();
        files.extend(in_dir);
    }
    files
}

/// A visible `*.yaml`/`*.yml` that is a regular file (symlinks followed, as in a mounted
/// ConfigMap; a FIFO, a device or a directory is not).
fn is_manifest_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
    is_yaml && !name.starts_with('.') && path.is_file()
}

#[cfg(test)]
#[path = "walk_tests.rs"]
mod tests;
