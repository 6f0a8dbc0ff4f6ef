//! GitLab's two pagination schemes (`docs/gitlab-behaviour.md` §7).
//!
//! * Offset (`page`, `per_page`): `X-Per-Page`, `X-Page`, `X-Next-Page`, `X-Prev-Page` (empty
//!   when absent) and `Link` (`prev`, `next`, `first`, and `last` only when counted); counted
//!   lists add `X-Total` and `X-Total-Pages`. `per_page` defaults to 20, is capped at 100, and
//!   0 is refused. A page past the end is an empty list.
//! * Keyset (`pagination=keyset`, only `order_by=id`, `sort=desc`): only a `Link: rel="next"`
//!   header, carrying a URL-safe Base64 JSON cursor (`{"id":"123","_kd":"n"}`), and none on the
//!   last page.

use crate::sim::api::errors::ApiError;
use crate::sim::api::params::Params;
use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};

/// The default page size.
pub(crate) const DEFAULT_PER_PAGE: u64 = 20;
/// The largest page size (Kaminari's `max_per_page`).
pub(crate) const MAX_PER_PAGE: u64 = 100;

/// Where pagination links point: the request URL rebuilt on the instance URL.
#[derive(Debug, Clone)]
pub(crate) struct LinkTarget {
    /// `<instance URL>api/v4/<raw request path>` without the query.
    pub url: String,
    /// The request's decoded query pairs.
    pub pairs: Vec<(String, String)>,
}

impl LinkTarget {
    /// The URL with `overrides` replacing (or adding) query parameters; keys are sorted like
    /// Rails' `to_query`.
    pub fn with(&self, overrides: &[(&str, String)]) -> String {
        let mut pairs: Vec<(String, String)> = self
            .pairs
            .iter()
            .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
            .cloned()
            .collect();
        pairs.extend(overrides.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let query: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect();
        format!("{}?{}", self.url, query.join("&"))
    }
}

/// Encodes like Ruby's `CGI.escape` (space as `+`, everything but `*-._` and alphanumerics
/// percent-encoded).
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// Reads and checks `per_page` (shared by both schemes).
fn per_page(params: &Params) -> Result<u64, ApiError> {
    match params.integer("per_page")? {
        None => Ok(DEFAULT_PER_PAGE),
        Some(0) => Err(ApiError::param("per_page has a value not allowed")),
        // Kaminari ignores a negative size.
        Some(n) if n < 0 => Ok(DEFAULT_PER_PAGE),
        Some(n) => Ok(u64::try_from(n).unwrap_or(MAX_PER_PAGE).min(MAX_PER_PAGE)),
    }
}

/// An offset page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetRequest {
    pub page: u64,
    pub per_page: u64,
}

impl OffsetRequest {
    pub fn parse(params: &Params) -> Result<OffsetRequest, ApiError> {
        let per_page = per_page(params)?;
        let page = match params.integer("page")? {
            // Kaminari treats pages below 1 as the first.
            Some(n) if n >= 1 => u64::try_from(n).unwrap_or(1),
            _ => 1,
        };
        Ok(OffsetRequest { page, per_page })
    }

    /// The index range of this page within `total` items (empty past the end).
    pub fn range(&self, total: usize) -> std::ops::Range<usize> {
        let start = usize::try_from((self.page - 1).saturating_mul(self.per_page))
            .unwrap_or(usize::MAX)
            .min(total);
        let end = start
            .saturating_add(usize::try_from(self.per_page).unwrap_or(usize::MAX))
            .min(total);
        start..end
    }

    /// The pagination headers for a list of `total` items. `counted` adds `X-Total`,
    /// `X-Total-Pages` and `rel="last"`.
    pub fn headers(
        &self,
        total: usize,
        counted: bool,
        link: &LinkTarget,
    ) -> Vec<(&'static str, String)> {
        let total = total as u64;
        let shown_before = (self.page - 1).saturating_mul(self.per_page);
        let out_of_range = shown_before >= total;
        let has_next = shown_before.saturating_add(self.per_page) < total;
        let has_prev = self.page > 1 && !out_of_range;
        let total_pages = total.div_ceil(self.per_page).max(1);
        let per_page = self.per_page.to_string();
        let page_link = |page: u64, rel: &str| {
            format!(
                "<{}>; rel=\"{rel}\"",
                link.with(&[("page", page.to_string()), ("per_page", per_page.clone())])
            )
        };
        let mut links = Vec::new();
        if has_prev {
            links.push(page_link(self.page - 1, "prev"));
        }
        if has_next {
            links.push(page_link(self.page + 1, "next"));
        }
        links.push(page_link(1, "first"));
        if counted {
            links.push(page_link(total_pages, "last"));
        }
        let mut headers = vec![
            ("x-per-page", per_page.clone()),
            ("x-page", self.page.to_string()),
            (
                "x-next-page",
                if has_next {
                    (self.page + 1).to_string()
                } else {
                    String::new()
                },
            ),
            (
                "x-prev-page",
                if has_prev {
                    (self.page - 1).to_string()
                } else {
                    String::new()
                },
            ),
            ("link", links.join(", ")),
        ];
        if counted {
            headers.push(("x-total", total.to_string()));
            headers.push(("x-total-pages", total_pages.to_string()));
        }
        headers
    }
}

/// Which way a keyset cursor points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Ids below the cursor (`_kd: "n"`).
    Next,
    /// Ids above the cursor (`_kd: "p"`).
    Prev,
}

/// A keyset page request on `id DESC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeysetRequest {
    pub per_page: u64,
    pub cursor: Option<(u64, Direction)>,
}

impl KeysetRequest {
    /// `Ok(None)` unless `pagination=keyset` was asked for.
    pub fn parse(params: &Params) -> Result<Option<KeysetRequest>, ApiError> {
        if params.scalar("pagination").as_deref() != Some("keyset") {
            return Ok(None);
        }
        let per_page = per_page(params)?;
        let order_by = params.scalar("order_by").unwrap_or_else(|| "id".to_owned());
        let sort = params.scalar("sort").unwrap_or_else(|| "desc".to_owned());
        if order_by != "id" || sort != "desc" {
            return Err(ApiError::method_not_allowed_error(
                "Keyset pagination is not yet available for this type of request",
            ));
        }
        let cursor = match params.scalar("cursor") {
            None => None,
            Some(raw) => {
                Some(decode_cursor(&raw).ok_or_else(|| ApiError::param("cursor is invalid"))?)
            }
        };
        Ok(Some(KeysetRequest { per_page, cursor }))
    }

    /// Picks this page from ids sorted descending; returns the page and whether more follow.
    pub fn page(&self, ids_desc: &[u64]) -> (Vec<u64>, bool) {
        let per_page = usize::try_from(self.per_page).unwrap_or(usize::MAX);
        match self.cursor {
            None | Some((_, Direction::Next)) => {
                let bound = self.cursor.map(|(id, _)| id);
                let mut rest = ids_desc
                    .iter()
                    .copied()
                    .filter(|id| bound.is_none_or(|b| *id < b));
                let page: Vec<u64> = rest.by_ref().take(per_page).collect();
                let more = rest.next().is_some();
                (page, more)
            }
            Some((bound, Direction::Prev)) => {
                let above: Vec<u64> = ids_desc.iter().copied().filter(|id| *id > bound).collect();
                let start = above.len().saturating_sub(per_page);
                (above[start..].to_vec(), true)
            }
        }
    }

    /// The `Link` header for the next page after `last_id`.
    pub fn next_link(&self, last_id: u64, link: &LinkTarget) -> String {
        format!(
            "<{}>; rel=\"next\"",
            link.with(&[("cursor", encode_cursor(last_id))])
        )
    }
}

/// `Base64.urlsafe_encode64({"id":"<id>","_kd":"n"}.to_json)` (padded, like Ruby).
pub(crate) fn encode_cursor(id: u64) -> String {
    URL_SAFE.encode(format!("{{\"id\":\"{id}\",\"_kd\":\"n\"}}"))
}

fn decode_cursor(raw: &str) -> Option<(u64, Direction)> {
    let trimmed = raw.trim_end_matches('=');
    let bytes = URL_SAFE_NO_PAD.decode(trimmed).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let id = match value.get("id")? {
        serde_json::Value::String(s) => s.parse().ok()?,
        serde_json::Value::Number(n) => n.as_u64()?,
        _ => return None,
    };
    let direction = match value.get("_kd").and_then(|v| v.as_str()) {
        None | Some("n") => Direction::Next,
        Some("p") => Direction::Prev,
        Some(_) => return None,
    };
    Some((id, direction))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> LinkTarget {
        LinkTarget {
            url: "http://gl/api/v4/projects/1/jobs".into(),
            pairs: vec![
                ("scope[]".into(), "failed".into()),
                ("per_page".into(), "2".into()),
            ],
        }
    }

    #[test]
    fn offset_headers_without_count() {
        let req = OffsetRequest {
            page: 2,
            per_page: 2,
        };
        let headers = req.headers(5, false, &target());
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("x-next-page").as_deref(), Some("3"));
        assert_eq!(get("x-prev-page").as_deref(), Some("1"));
        assert_eq!(get("x-total"), None);
        let link = get("link").expect("link");
        assert_eq!(
            link,
            "<http://gl/api/v4/projects/1/jobs?page=1&per_page=2&scope%5B%5D=failed>; rel=\"prev\", \
             <http://gl/api/v4/projects/1/jobs?page=3&per_page=2&scope%5B%5D=failed>; rel=\"next\", \
             <http://gl/api/v4/projects/1/jobs?page=1&per_page=2&scope%5B%5D=failed>; rel=\"first\""
        );
    }

    #[test]
    fn offset_headers_counted_and_past_the_end() {
        let req = OffsetRequest {
            page: 3,
            per_page: 2,
        };
        let headers = req.headers(5, true, &target());
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("x-next-page").as_deref(), Some(""));
        assert_eq!(get("x-total").as_deref(), Some("5"));
        assert_eq!(get("x-total-pages").as_deref(), Some("3"));
        assert!(get("link").is_some_and(|l| l.ends_with("page=3&per_page=2&scope%5B%5D=failed>; rel=\"last\"")));
        let past = OffsetRequest {
            page: 9,
            per_page: 2,
        };
        assert_eq!(past.range(5), 5..5);
        let headers = past.headers(5, true, &target());
        assert!(headers.contains(&("x-prev-page", String::new())));
        assert_eq!(
            OffsetRequest {
                page: 1,
                per_page: 2
            }
            .headers(0, true, &target())[5],
            ("x-total", "0".into())
        );
    }

    #[test]
    fn per_page_rules() {
        let parse = |q: &str| OffsetRequest::parse(&Params::from_query(q));
        assert_eq!(parse("").map(|r| r.per_page), Ok(20));
        assert_eq!(parse("per_page=500").map(|r| r.per_page), Ok(100));
        assert_eq!(
            parse("per_page=0"),
            Err(ApiError::param("per_page has a value not allowed"))
        );
        assert_eq!(
            parse("per_page=x"),
            Err(ApiError::param("per_page is invalid"))
        );
        assert_eq!(parse("page=-3").map(|r| r.page), Ok(1));
    }

    #[test]
    fn cursors_round_trip() {
        let encoded = encode_cursor(123);
        assert_eq!(encoded, "eyJpZCI6IjEyMyIsIl9rZCI6Im4ifQ==");
        assert_eq!(decode_cursor(&encoded), Some((123, Direction::Next)));
        assert_eq!(
            decode_cursor(encoded.trim_end_matches('=')),
            Some((123, Direction::Next))
        );
        assert_eq!(decode_cursor("not base64!"), None);
    }

    #[test]
    fn keyset_pages() {
        let ids = [9, 7, 5, 3, 1];
        let first = KeysetRequest {
            per_page: 2,
            cursor: None,
        };
        assert_eq!(first.page(&ids), (vec![9, 7], true));
        let next = KeysetRequest {
            per_page: 2,
            cursor: Some((5, Direction::Next)),
        };
        assert_eq!(next.page(&ids), (vec![3, 1], false));
        let prev = KeysetRequest {
            per_page: 2,
            cursor: Some((3, Direction::Prev)),
        };
        assert_eq!(prev.page(&ids), (vec![7, 5], true));
        let sort = KeysetRequest::parse(&Params::from_query("pagination=keyset&sort=asc"));
        assert_eq!(sort.map_err(|e| e.status.as_u16()), Err(405));
    }
}
