//! Job artifacts: each archive holds a few small files generated from the job (so nothing is
//! stored per job), served as a real ZIP file written here: entries "stored" (no compression)
//! with CRC-32 checksums, readable by `unzip` and any ZIP library.

use crate::sim::state::Job;

/// One file inside an artifacts archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArtifactFile {
    pub path: String,
    pub content: Vec<u8>,
}

/// The files of a job's archive, by job name.
pub(crate) fn files(job: &Job, git_ref: &str) -> Vec<ArtifactFile> {
    let file = |path: &str, content: String| ArtifactFile {
        path: path.to_owned(),
        content: content.into_bytes(),
    };
    let id = job.id;
    let name: &str = &job.name;
    if name.starts_with("rspec") {
        vec![
            file(
                "rspec.xml",
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"{name}\" tests=\"412\" failures=\"0\" errors=\"0\"/>\n"
                ),
            ),
            file("coverage/summary.txt", format!("job {id}: {name}\n")),
        ]
    } else if name == "release" {
        vec![
            file(
                "dist/CHANGELOG.md",
                format!("# {git_ref}\n\n* Released by job {id}\n"),
            ),
            file(
                "dist/checksums.txt",
                format!("{:016x}  app.tar.gz\n", crate::sim::state::mix64(id)),
            ),
        ]
    } else {
        vec![
            file(
                "build/info.txt",
                format!("job={id}\nname={name}\nref={git_ref}\n"),
            ),
            file("build/VERSION", format!("1.0.{id}\n")),
        ]
    }
}

/// The size of the ZIP archive [`zip`] writes for these files (without writing it).
pub(crate) fn zip_size(files: &[ArtifactFile]) -> u64 {
    let entries: u64 = files
        .iter()
        .map(|f| (LOCAL_HEADER + CENTRAL_HEADER + 2 * f.path.len() + f.content.len()) as u64)
        .sum();
    entries + END_RECORD as u64
}

const LOCAL_HEADER: usize = 30;
const CENTRAL_HEADER: usize = 46;
const END_RECORD: usize = 22;
/// 1980-01-01 00:00 in MS-DOS format (ZIP's epoch); fixed so archives are reproducible.
const DOS_TIME: u16 = 0;
const DOS_DATE: u16 = (1 << 5) | 1;

/// Writes a ZIP archive (stored entries, CRC-32, no ZIP64; the archives here are tiny).
pub(crate) fn zip(files: &[ArtifactFile]) -> Vec<u8> {
    let mut out = Vec::with_capacity(usize::try_from(zip_size(files)).unwrap_or(0));
    let mut central = Vec::new();
    for f in files {
        let offset = out.len() as u32;
        let crc = crc32(&f.content);
        let size = f.content.len() as u32;
        let name = f.path.as_bytes();

        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&10u16.to_le_bytes()); // version needed
        out.extend_from_slice(&0x0800u16.to_le_bytes()); // flags: UTF-8 names
        out.extend_from_slice(&0u16.to_le_bytes()); // method: stored
        out.extend_from_slice(&DOS_TIME.to_le_bytes());
        out.extend_from_slice(&DOS_DATE.to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes()); // extra length
        out.extend_from_slice(name);
        out.extend_from_slice(&f.content);

        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&0x031eu16.to_le_bytes()); // made by: Unix, 3.0
        central.extend_from_slice(&10u16.to_le_bytes());
        central.extend_from_slice(&0x0800u16.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&DOS_TIME.to_le_bytes());
        central.extend_from_slice(&DOS_DATE.to_le_bytes());
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes()); // extra
        central.extend_from_slice(&0u16.to_le_bytes()); // comment
        central.extend_from_slice(&0u16.to_le_bytes()); // disk
        central.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
        central.extend_from_slice(&(0o100_644u32 << 16).to_le_bytes()); // external: -rw-r--r--
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name);
    }
    let central_offset = out.len() as u32;
    let central_size = central.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&central_size.to_le_bytes());
    out.extend_from_slice(&central_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// CRC-32 (IEEE 802.3, reflected, as ZIP uses it).
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xedb8_8320 & mask);
        }
    }
    !crc
}

/// The `Content-Type` of a single file served from an archive.
pub(crate) fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("txt" | "md") => "text/plain; charset=utf-8",
        Some("xml") => "application/xml",
        Some("json") => "application/json",
        Some("html") => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn zip_layout_is_consistent() {
        let files = vec![
            ArtifactFile {
                path: "a.txt".into(),
                content: b"hello".to_vec(),
            },
            ArtifactFile {
                path: "dir/b.bin".into(),
                content: vec![0, 1, 2, 3],
            },
        ];
        let bytes = zip(&files);
        assert_eq!(bytes.len() as u64, zip_size(&files));
        assert_eq!(&bytes[..4], b"PK\x03\x04");
        // The end record points at the central directory, whose first entry is a CDFH.
        let end = &bytes[bytes.len() - 22..];
        assert_eq!(&end[..4], b"PK\x05\x06");
        assert_eq!(u16::from_le_bytes([end[10], end[11]]), 2);
        let cd_offset = u32::from_le_bytes([end[16], end[17], end[18], end[19]]) as usize;
        assert_eq!(&bytes[cd_offset..cd_offset + 4], b"PK\x01\x02");
        // The first entry's data follows its header and name.
        assert_eq!(&bytes[30 + 5..30 + 5 + 5], b"hello");
        let crc = u32::from_le_bytes([bytes[14], bytes[15], bytes[16], bytes[17]]);
        assert_eq!(crc, crc32(b"hello"));
    }
}
