//! GitLab's two pagination schemes, and lazy streams over paged listings.
//!
//! - Offset (the default): `page`/`per_page`; the next page is announced by `X-Next-Page` (an
//!   empty string on the last page) and by `Link: <…>; rel="next"`. The project jobs list sends
//!   no `X-Total`, so the client never relies on counts.
//! - Keyset (`pagination=keyset&order_by=id&sort=desc`, project jobs only): the next page is the
//!   `Link rel="next"` URL, which carries an opaque `cursor`; no `Link` means the last page.
//!
//! The next page is always requested on the endpoint URL the client built, with only the query
//! taken from GitLab's headers: `Link` URLs use GitLab's configured external host, which may not
//! be the address the client talks to, and a credential must never follow a link elsewhere.
//!
//! Streams are lazy: a page is fetched only when the consumer polls past the previous one, so a
//! consumer that stops early stops paging. A stream ends after yielding a page-level error;
//! a single item that does not decode is yielded as an error in its place and paging goes on.

use crate::gitlab::client::{BodyError, GitLabClient, decode_body};
use crate::gitlab::endpoints::{Endpoint, Query};
use crate::gitlab::error::GitLabError;
use futures::Stream;
use reqwest::header::{HeaderMap, LINK};
use serde::de::DeserializeOwned;
use std::collections::{HashSet, VecDeque};
use url::Url;

/// Items per page; GitLab's maximum.
pub const PER_PAGE: u32 = 100;

/// How a listing is paged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PaginationMode {
    /// `page=`/`per_page=`, following `X-Next-Page`. Works everywhere; GitLab may cap the
    /// offset (50,000 by default) on large job tables.
    #[default]
    Offset,
    /// Cursor-based, following `Link rel="next"`. Only `GET /projects/:id/jobs` supports it,
    /// ordered by id descending; it has no depth limit and is cheaper for GitLab.
    Keyset,
}

impl PaginationMode {
    /// Adds this mode's parameters, with `per_page` items a page (1–100), to a listing's query.
    pub(crate) fn apply(self, query: &mut Query, per_page: u32) {
        let per_page = per_page.clamp(1, PER_PAGE).to_string();
        match self {
            PaginationMode::Offset => {
                query.push("per_page", per_page);
            }
            PaginationMode::Keyset => {
                query
                    .push("pagination", "keyset")
                    .push("per_page", per_page)
                    .push("order_by", "id")
                    .push("sort", "desc");
            }
        }
    }
}

/// One entry of a `Link` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkEntry {
    pub(crate) target: String,
    pub(crate) rels: Vec<String>,
}

/// Parses a `Link` header value (RFC 8288): `<url>; rel="next", <url>; rel="first"`. Tolerates
/// unquoted values, extra parameters and whitespace; ignores malformed entries.
pub(crate) fn parse_link_header(value: &str) -> Vec<LinkEntry> {
    let mut entries = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let after_open = &rest[open + 1..];
        let Some(close) = after_open.find('>') else {
            break;
        };
        let target = after_open[..close].trim().to_owned();
        let after_target = &after_open[close + 1..];
        // The parameters run until the next entry; a quoted value may contain commas.
        let mut end = after_target.len();
        let mut in_quotes = false;
        for (i, c) in after_target.char_indices() {
            match c {
                '"' => in_quotes = !in_quotes,
                ',' if !in_quotes => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let params = &after_target[..end];
        let rels = params
            .split(';')
            .filter_map(|param| {
                let (name, value) = param.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("rel")
                    .then(|| value.trim().trim_matches('"').to_owned())
            })
            .flat_map(|value| {
                value
                    .split_ascii_whitespace()
                    .map(str::to_ascii_lowercase)
                    .collect::<Vec<_>>()
            })
            .collect();
        entries.push(LinkEntry { target, rels });
        rest = &after_target[end..];
    }
    entries
}

/// The `rel="next"` target among all `Link` headers of a response.
fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_link_header)
        .find(|entry| entry.rels.iter().any(|r| r == "next"))
        .map(|entry| entry.target)
}

/// The URL of the page after `current`, or `None` on the last page.
///
/// Offset mode trusts `X-Next-Page` first and falls back to `Link`. Keyset mode trusts `Link`
/// first; should a server ignore `pagination=keyset` and answer with offset pages instead, its
/// `X-Next-Page` is followed so that the listing is still complete.
pub(crate) fn next_page_url(
    current: &Url,
    headers: &HeaderMap,
    mode: PaginationMode,
) -> Result<Option<Url>, String> {
    let next_page = x_next_page(headers)?;
    let link = next_link(headers);
    let next = match (mode, next_page, link) {
        (PaginationMode::Offset, Some(page), _) => page.map(|page| with_page(current, page)),
        (PaginationMode::Offset, None, link) | (PaginationMode::Keyset, _, link @ Some(_)) => {
            match link {
                Some(target) => Some(with_query_of(current, &target)?),
                None => None,
            }
        }
        (PaginationMode::Keyset, next_page, None) => {
            next_page.flatten().map(|page| with_page(current, page))
        }
    };
    Ok(next)
}

/// `X-Next-Page`: `None` when absent, `Some(None)` when empty (the last page).
fn x_next_page(headers: &HeaderMap) -> Result<Option<Option<u64>>, String> {
    let Some(value) = headers.get("x-next-page") else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| "X-Next-Page is not text".to_owned())?
        .trim();
    if value.is_empty() {
        return Ok(Some(None));
    }
    value
        .parse()
        .map(|page| Some(Some(page)))
        .map_err(|_| format!("X-Next-Page is not a page number: `{value}`"))
}

/// `current` with the query of the (possibly relative) link `target`.
fn with_query_of(current: &Url, target: &str) -> Result<Url, String> {
    let link = current
        .join(target)
        .map_err(|e| format!("the next-page link is not a URL: {e}"))?;
    let mut next = current.clone();
    next.set_query(link.query());
    Ok(next)
}

/// `current` with its `page` parameter set to `page`; every other parameter is kept verbatim.
fn with_page(current: &Url, page: u64) -> Url {
    let mut pairs: Vec<&str> = current
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some("page"))
        .collect();
    let page = format!("page={page}");
    pairs.push(&page);
    let mut next = current.clone();
    next.set_query(Some(&pairs.join("&")));
    next
}

/// Decodes page number `page` of a listing: the body is split into its items without building
/// a JSON tree, then each item is decoded on its own, so one odd item is an error in its place.
/// A body that is not a JSON array fails the page.
pub(crate) fn decode_page<T: DeserializeOwned>(
    endpoint: Endpoint,
    page: u32,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<Result<T, GitLabError>>, BodyError> {
    let items: Vec<&serde_json::value::RawValue> = decode_body(endpoint, headers, body)?;
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            serde_json::from_str::<T>(item.get()).map_err(|e| GitLabError::Decode {
                method: endpoint.method.as_str(),
                endpoint: endpoint.template,
                detail: format!("item {index} of page {page}: {e}"),
            })
        })
        .collect())
}

/// The state of a paged listing between polls.
struct Pager<T> {
    client: GitLabClient,
    endpoint: Endpoint,
    mode: PaginationMode,
    next: Option<Url>,
    buffered: VecDeque<Result<T, GitLabError>>,
    pages: u32,
    requested: HashSet<String>,
}

impl<T: DeserializeOwned> Pager<T> {
    fn pagination_error(&self, detail: impl Into<String>) -> GitLabError {
        GitLabError::Pagination {
            endpoint: self.endpoint.template,
            detail: detail.into(),
        }
    }

    /// Fetches the page at `url` into the buffer and records where the next one is.
    async fn fetch(&mut self, url: Url) -> Result<(), GitLabError> {
        if self.pages >= self.client.inner.max_pages {
            return Err(self.pagination_error(format!(
                "more than {} pages; refusing to page further",
                self.client.inner.max_pages
            )));
        }
        if !self.requested.insert(url.as_str().to_owned()) {
            return Err(self.pagination_error("GitLab pointed back to a page already fetched"));
        }
        self.pages += 1;
        let (endpoint, page) = (self.endpoint, self.pages);
        // One odd item is reported in its place and paging goes on; a page cut off in transit
        // fails the split and is fetched again.
        let (items, headers) = self
            .client
            .get_decoded(endpoint, &url, |headers, body| {
                decode_page(endpoint, page, headers, body)
            })
            .await?;
        self.next =
            next_page_url(&url, &headers, self.mode).map_err(|e| self.pagination_error(e))?;
        self.buffered.extend(items);
        Ok(())
    }
}

/// A lazy stream of every item of a paged listing, starting at `first`.
pub(crate) fn paginate<T>(
    client: GitLabClient,
    endpoint: Endpoint,
    first: Result<Url, GitLabError>,
    mode: PaginationMode,
) -> impl Stream<Item = Result<T, GitLabError>> + Send + 'static
where
    T: DeserializeOwned + Send + 'static,
{
    let mut buffered = VecDeque::new();
    let next = match first {
        Ok(url) => Some(url),
        Err(e) => {
            buffered.push_back(Err(e));
            None
        }
    };
    let pager = Pager {
        client,
        endpoint,
        mode,
        next,
        buffered,
        pages: 0,
        requested: HashSet::new(),
    };
    futures::stream::unfold(pager, |mut pager| async move {
        loop {
            if let Some(item) = pager.buffered.pop_front() {
                return Some((item, pager));
            }
            let url = pager.next.take()?;
            if let Err(e) = pager.fetch(url).await {
                pager.next = None;
                return Some((Err(e), pager));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn link_headers_of_both_kinds() {
        let offset = r#"<https://gitlab.example.com/api/v4/projects/8/jobs?id=8&page=2&per_page=100&scope%5B%5D=failed>; rel="next", <https://gitlab.example.com/api/v4/projects/8/jobs?id=8&page=1&per_page=100>; rel="first""#;
        let entries = parse_link_header(offset);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].rels, ["next"]);
        assert!(entries[0].target.ends_with("scope%5B%5D=failed"));
        assert_eq!(entries[1].rels, ["first"]);

        let keyset = r#"<https://gitlab.example.com/api/v4/projects/8/jobs?cursor=eyJpZCI6IjEyMyIsIl9rZCI6Im4ifQ%3D%3D&order_by=id&pagination=keyset&per_page=100&sort=desc>; rel="next""#;
        let entries = parse_link_header(keyset);
        assert_eq!(entries.len(), 1);
        assert!(entries[0].target.contains("cursor=eyJ"));

        let odd = "<a>;rel=next;title=\"x, y\" , <b>; REL=\"prev first\"";
        let entries = parse_link_header(odd);
        assert_eq!(entries[0].target, "a");
        assert_eq!(entries[0].rels, ["next"]);
        assert_eq!(entries[1].rels, ["prev", "first"]);
        assert!(parse_link_header("garbage, <unterminated").is_empty());
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn url(s: &str) -> Url {
        s.parse().unwrap()
    }

    #[test]
    fn offset_follows_x_next_page_on_our_own_url() {
        let current =
            url("http://127.0.0.1:9/api/v4/projects/g%2Fp/jobs?scope[]=failed&per_page=100&page=1");
        let h = headers(&[
            ("x-next-page", "2"),
            (
                "link",
                "<https://external.example.com/api/v4/projects/g%2Fp/jobs?page=2>; rel=\"next\"",
            ),
        ]);
        let next = next_page_url(&current, &h, PaginationMode::Offset)
            .unwrap()
            .unwrap();
        assert_eq!(
            next.as_str(),
            "http://127.0.0.1:9/api/v4/projects/g%2Fp/jobs?scope[]=failed&per_page=100&page=2"
        );
        let last = headers(&[("x-next-page", ""), ("x-page", "3")]);
        assert_eq!(
            next_page_url(&current, &last, PaginationMode::Offset),
            Ok(None)
        );
        let bad = headers(&[("x-next-page", "two")]);
        assert!(next_page_url(&current, &bad, PaginationMode::Offset).is_err());
    }

    #[test]
    fn offset_falls_back_to_the_link_header() {
        let current = url("http://127.0.0.1:9/api/v4/projects/1/pipelines/5/jobs?per_page=100");
        let h = headers(&[(
            "link",
            "<https://gitlab.example.com/api/v4/projects/1/pipelines/5/jobs?page=2&per_page=100>; rel=\"next\"",
        )]);
        let next = next_page_url(&current, &h, PaginationMode::Offset)
            .unwrap()
            .unwrap();
        assert_eq!(
            next.as_str(),
            "http://127.0.0.1:9/api/v4/projects/1/pipelines/5/jobs?page=2&per_page=100"
        );
        assert_eq!(
            next_page_url(&current, &HeaderMap::new(), PaginationMode::Offset),
            Ok(None)
        );
    }

    #[test]
    fn keyset_follows_the_cursor_and_ends_without_link() {
        let current = url(
            "http://127.0.0.1:9/api/v4/projects/g%2Fp/jobs?pagination=keyset&per_page=100&order_by=id&sort=desc",
        );
        let h = headers(&[(
            "link",
            "<https://gitlab.example.com/api/v4/projects/g%2Fp/jobs?cursor=abc%3D&order_by=id&pagination=keyset&per_page=100&sort=desc>; rel=\"next\"",
        )]);
        let next = next_page_url(&current, &h, PaginationMode::Keyset)
            .unwrap()
            .unwrap();
        assert_eq!(next.host_str(), Some("127.0.0.1"));
        assert_eq!(next.path(), "/api/v4/projects/g%2Fp/jobs");
        assert!(next.query().unwrap().contains("cursor=abc%3D"));
        // The last keyset page has no Link.
        assert_eq!(
            next_page_url(&current, &HeaderMap::new(), PaginationMode::Keyset),
            Ok(None)
        );
        // A server that ignored `pagination=keyset` and paged by offset is still followed.
        let offset_answer = headers(&[("x-next-page", "2")]);
        let next = next_page_url(&current, &offset_answer, PaginationMode::Keyset)
            .unwrap()
            .unwrap();
        assert!(next.query().unwrap().ends_with("&page=2"));
        let offset_last = headers(&[("x-next-page", "")]);
        assert_eq!(
            next_page_url(&current, &offset_last, PaginationMode::Keyset),
            Ok(None)
        );
    }

    #[test]
    fn modes_add_their_parameters() {
        let mut q = Query::new();
        PaginationMode::Offset.apply(&mut q, PER_PAGE);
        assert_eq!(q.to_query_string(), "per_page=100");
        let mut q = Query::new();
        PaginationMode::Keyset.apply(&mut q, PER_PAGE);
        assert_eq!(
            q.to_query_string(),
            "pagination=keyset&per_page=100&order_by=id&sort=desc"
        );
    }
}
