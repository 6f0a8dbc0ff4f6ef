//! Streaming response bodies (job logs, artifacts) chunk by chunk, never buffering them whole.
//!
//! Every download goes through one function, [`GitLabClient::download`], given a [`Download`]:
//! what to fetch, which names its endpoint, path and query. The per-endpoint methods of
//! [`jobs`](crate::gitlab::jobs) (`download_artifacts`, …) are one-line wrappers around it.

use crate::gitlab::client::{GitLabClient, Opened, timeout_error, transport_error};
use crate::gitlab::endpoints::{Endpoint, PathParams, Query};
use crate::gitlab::error::GitLabError;
use crate::gitlab::models::ProjectRef;
use bytes::Bytes;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use url::Url;

/// A body the client can download: a job's log, or an artifacts archive or one file of it, of a
/// job given by id or as the latest successful job of a name on a ref.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Download<'a> {
    /// `GET /projects/:id/jobs/:job_id/trace`: the job log.
    JobLog {
        project: &'a ProjectRef,
        job_id: u64,
    },
    /// `GET /projects/:id/jobs/:job_id/artifacts`: the artifacts archive.
    Artifacts {
        project: &'a ProjectRef,
        job_id: u64,
    },
    /// `GET /projects/:id/jobs/artifacts/:ref_name/download?job=…`: the archive of the latest
    /// successful `job_name` job on `ref_name` (a branch or tag; encoded, `/` included).
    ArtifactsByRef {
        project: &'a ProjectRef,
        ref_name: &'a str,
        job_name: &'a str,
    },
    /// `GET /projects/:id/jobs/:job_id/artifacts/*artifact_path`: one file of the archive
    /// (`some/release/file.pdf`; `.`/`..` segments are refused).
    ArtifactFile {
        project: &'a ProjectRef,
        job_id: u64,
        artifact_path: &'a str,
    },
    /// `GET /projects/:id/jobs/artifacts/:ref_name/raw/*artifact_path?job=…`: one file of the
    /// archive of the latest successful `job_name` job on `ref_name`.
    ArtifactFileByRef {
        project: &'a ProjectRef,
        ref_name: &'a str,
        job_name: &'a str,
        artifact_path: &'a str,
    },
}

impl<'a> Download<'a> {
    /// The endpoint this download is a request to (its metric label and its route).
    pub fn endpoint(&self) -> Endpoint {
        match self {
            Download::JobLog { .. } => Endpoint::JOB_TRACE,
            Download::Artifacts { .. } => Endpoint::DOWNLOAD_ARTIFACTS,
            Download::ArtifactsByRef { .. } => Endpoint::DOWNLOAD_ARTIFACTS_BY_REF,
            Download::ArtifactFile { .. } => Endpoint::DOWNLOAD_ARTIFACT_FILE,
            Download::ArtifactFileByRef { .. } => Endpoint::DOWNLOAD_ARTIFACT_FILE_BY_REF,
        }
    }

    /// The values of the endpoint's placeholders.
    fn params(&self) -> PathParams<'a> {
        match *self {
            Download::JobLog { project, job_id } | Download::Artifacts { project, job_id } => {
                PathParams::project(project).job(job_id)
            }
            Download::ArtifactsByRef {
                project, ref_name, ..
            } => PathParams::project(project).ref_name(ref_name),
            Download::ArtifactFile {
                project,
                job_id,
                artifact_path,
            } => PathParams::project(project)
                .job(job_id)
                .artifact_path(artifact_path),
            Download::ArtifactFileByRef {
                project,
                ref_name,
                artifact_path,
                ..
            } => PathParams::project(project)
                .ref_name(ref_name)
                .artifact_path(artifact_path),
        }
    }

    /// The query string: `job=` for the by-ref downloads, nothing for the others.
    fn query(&self) -> Query {
        let mut query = Query::new();
        if let Download::ArtifactsByRef { job_name, .. }
        | Download::ArtifactFileByRef { job_name, .. } = self
        {
            query.push("job", job_name);
        }
        query
    }

    /// The URL of the request.
    fn url(&self, client: &GitLabClient) -> Result<Url, GitLabError> {
        client.endpoint_url(self.endpoint(), &self.params(), &self.query())
    }
}

impl GitLabClient {
    /// GETs `what` and writes its body to `writer` as it arrives. Returns the number of bytes
    /// written. Retried (like any GET) until the response starts; a body that breaks off is an
    /// error, as the writer already holds part of it.
    pub async fn download<W>(&self, what: Download<'_>, writer: &mut W) -> Result<u64, GitLabError>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let endpoint = what.endpoint();
        let url = what.url(self)?;
        let write_error = |source| GitLabError::Write {
            endpoint: endpoint.template,
            source,
        };
        let mut chunks = self.body_chunks(endpoint, &url).await?;
        let mut written = 0u64;
        while let Some(chunk) = chunks.next().await? {
            writer.write_all(&chunk).await.map_err(write_error)?;
            written += chunk.len() as u64;
        }
        writer.flush().await.map_err(write_error)?;
        Ok(written)
    }

    /// GETs `what` and keeps only the last `max_bytes` of its body (as text; invalid UTF-8 is
    /// replaced).
    pub async fn download_tail(
        &self,
        what: Download<'_>,
        max_bytes: usize,
    ) -> Result<String, GitLabError> {
        let url = what.url(self)?;
        let mut chunks = self.body_chunks(what.endpoint(), &url).await?;
        let mut tail = TailBuffer::new(max_bytes);
        while let Some(chunk) = chunks.next().await? {
            tail.push(&chunk);
        }
        Ok(tail.into_string())
    }

    async fn body_chunks(&self, endpoint: Endpoint, url: &Url) -> Result<BodyChunks, GitLabError> {
        let opened = self.open_stream(endpoint, url).await?;
        Ok(BodyChunks {
            opened,
            endpoint,
            timeout: self.inner.timeout,
        })
    }
}

/// The chunks of a response body, each awaited under the read timeout. The exchange is
/// reported to the observer when this is dropped.
struct BodyChunks {
    opened: Opened,
    endpoint: Endpoint,
    timeout: Duration,
}

impl BodyChunks {
    async fn next(&mut self) -> Result<Option<Bytes>, GitLabError> {
        tokio::time::timeout(self.timeout, self.opened.response.chunk())
            .await
            .map_err(|_| timeout_error(self.endpoint, self.timeout))?
            .map_err(|e| transport_error(self.endpoint, e))
    }
}

/// Keeps the last `max` bytes of a stream in at most `2 · max` bytes of memory.
#[derive(Debug)]
pub(crate) struct TailBuffer {
    max: usize,
    buffer: Vec<u8>,
    /// Whether bytes before the buffer's start were dropped.
    cut: bool,
}

impl TailBuffer {
    pub(crate) fn new(max: usize) -> TailBuffer {
        TailBuffer {
            max,
            buffer: Vec::new(),
            cut: false,
        }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) {
        if chunk.len() >= self.max {
            self.cut |= !self.buffer.is_empty() || chunk.len() > self.max;
            self.buffer.clear();
            self.buffer
                .extend_from_slice(&chunk[chunk.len() - self.max..]);
            return;
        }
        self.buffer.extend_from_slice(chunk);
        if self.buffer.len() > 2 * self.max {
            let excess = self.buffer.len() - self.max;
            self.buffer.drain(..excess);
            self.cut = true;
        }
    }

    /// The last `max` bytes as text. Invalid UTF-8 is replaced; a character cut in half at the
    /// start is dropped rather than shown as a replacement character.
    pub(crate) fn into_string(self) -> String {
        let start = self.buffer.len().saturating_sub(self.max);
        let mut tail = &self.buffer[start..];
        if self.cut || start > 0 {
            let continuation = tail
                .iter()
                .take(3)
                .take_while(|b| (**b & 0b1100_0000) == 0b1000_0000)
                .count();
            tail = &tail[continuation..];
        }
        String::from_utf8_lossy(tail).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(chunks: &[&[u8]], max: usize) -> String {
        let mut t = TailBuffer::new(max);
        for c in chunks {
            t.push(c);
        }
        t.into_string()
    }

    #[test]
    fn keeps_the_last_bytes_across_chunks() {
        assert_eq!(tail_of(&[b"hello ", b"world"], 5), "world");
        assert_eq!(tail_of(&[b"ab", b"cd", b"ef", b"gh", b"ij"], 3), "hij");
        assert_eq!(tail_of(&[b"short"], 100), "short");
        assert_eq!(tail_of(&[b"0123456789"], 4), "6789");
        assert_eq!(tail_of(&[b"abc"], 0), "");
        assert_eq!(tail_of(&[], 10), "");
    }

    #[test]
    fn memory_stays_bounded() {
        let mut t = TailBuffer::new(10);
        for _ in 0..1000 {
            t.push(b"0123");
            assert!(t.buffer.len() <= 20);
        }
        assert_eq!(t.into_string(), "2301230123");
    }

    #[test]
    fn a_character_cut_in_half_is_dropped_and_bad_bytes_replaced() {
        // "aé€" is 1 + 2 + 3 bytes: its last 4 bytes start inside "é".
        let s = "aé€".as_bytes();
        assert_eq!(tail_of(&[s], 4), "€");
        assert_eq!(tail_of(&[s], 5), "é€");
        assert_eq!(tail_of(&[b"ok \xff"], 10), "ok \u{fffd}");
    }
}
