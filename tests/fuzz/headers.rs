//! GitLab's response headers: pagination (`Link`, `X-Next-Page` and the other `X-` counters)
//! and rate limits (`RateLimit-*`, `Retry-After`), with arbitrary values. Besides never
//! panicking: the next page is always asked of the URL the client built (only its query
//! changes, so a token never follows a link elsewhere), and no header pauses the client for
//! longer than its cap.

use crate::mutate::{self, ODD_UNICODE};
use crate::support::{self, any_now, bounded};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use jobwarden::gitlab::testing;
use jobwarden::gitlab::{LimitScope, PaginationMode, RateLimiter};
use proptest::prelude::*;
use std::sync::OnceLock;
use std::time::Instant;
use url::Url;

/// `Link` syntax and URL pieces for byte-level insertions.
const LINK_TOKENS: &[&str] = &[
    "<",
    ">",
    ";",
    ",",
    "\"",
    "=",
    " ",
    "rel=",
    "rel=\"next\"",
    "rel=next",
    "next",
    "NEXT",
    "title=\"a, b\"",
    "http://",
    "https://",
    "//",
    "?",
    "&",
    "#",
    "%",
    "%2F",
    "%zz",
    "page=",
    "cursor=",
    "..",
    "\\",
    "@",
    ":",
    "[::1]",
    ":99999",
    "\t",
    "javascript:",
    "data:,",
];

fn link_seeds() -> &'static [String] {
    static SEEDS: OnceLock<Vec<String>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let text =
            std::fs::read_to_string(support::repo_path("tests/fuzz/corpus/headers/link.txt"))
                .expect("the Link seeds");
        text.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

/// URLs the client builds for listings (an encoded project path, scopes, a relative root, an
/// IPv6 host and a port), which the next page must stay on.
const CURRENT_URLS: &[&str] = &[
    "http://127.0.0.1:9/api/v4/projects/g%2Fp/jobs?scope[]=failed&per_page=100&page=1",
    "https://gitlab.example.com/api/v4/projects/1/jobs?pagination=keyset&per_page=100&order_by=id&sort=desc",
    "https://gitlab.example.com/gitlab/api/v4/projects/1/pipelines/5/jobs?include_retried=true&per_page=100",
    "http://[::1]:8080/api/v4/projects/a%2Fb%2Fc/jobs",
];

/// Header values: the seeds mutated, arbitrary text, or arbitrary bytes.
fn value_bytes(seeds: Vec<String>) -> impl Strategy<Value = Vec<u8>> {
    let from_seed = (
        prop::sample::select(seeds),
        mutate::byte_ops(LINK_TOKENS, 6),
    )
        .prop_map(|(seed, ops)| mutate::apply_bytes(seed.as_bytes(), &ops, &[]));
    prop_oneof![
        4 => from_seed,
        1 => any::<String>().prop_map(String::into_bytes),
        1 => prop::sample::select(ODD_UNICODE).prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// Values for a numeric header: numbers of every size and sign, near misses and words.
fn number_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[0-9]{1,25}",
        2 => prop::sample::select(&[
            "", " ", "0", "1", " 2 ", "-1", "+1", "01", "0x10", "1e3", "1.5", "18446744073709551615",
            "18446744073709551616", "9223372036854775807", "-9223372036854775808", "\u{FF12}",
            "NaN", "null", "2, 3",
        ][..])
        .prop_map(str::to_owned),
        1 => any::<String>(),
    ]
    .prop_map(String::into_bytes)
}

/// An HTTP-date-like text (IMF-fixdate and near misses).
fn http_date() -> impl Strategy<Value = Vec<u8>> {
    "(Mon|Tue|Sun|Xyz), [0-9]{1,2} (Jan|Feb|Dec|Foo) [0-9]{1,6} [0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2} (GMT|UTC|Z|[+-][0-9]{4}|EST)"
        .prop_map(String::into_bytes)
}

/// A header map built from `(name, value)` pairs; values a header cannot hold are left out.
fn header_map(pairs: &[(&str, Vec<u8>)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

/// The headers of `tests/fuzz/corpus/headers/rate-limit.txt` (`name: value` lines: what GitLab
/// and the simulator send), a few of them, their values mutated.
fn seeded_headers() -> impl Strategy<Value = Vec<(&'static str, Vec<u8>)>> {
    static SEEDS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    let seeds = SEEDS.get_or_init(|| {
        let path = support::repo_path("tests/fuzz/corpus/headers/rate-limit.txt");
        let text = std::fs::read_to_string(path).expect("the header seeds");
        text.lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
            .collect()
    });
    let one = (
        prop::sample::select((0..seeds.len()).collect::<Vec<_>>()),
        prop::collection::vec(mutate_value_op(), 0..3),
    )
        .prop_map(move |(i, ops)| {
            let (name, value) = &seeds[i];
            (
                name.as_str(),
                mutate::apply_bytes(value.as_bytes(), &ops, &[]),
            )
        });
    prop::collection::vec(one, 0..5)
}

/// Byte edits of a header value, with number and date pieces to insert.
fn mutate_value_op() -> impl Strategy<Value = mutate::ByteOp> {
    mutate::byte_ops(
        &[
            "0",
            "9",
            "-",
            "+",
            " ",
            ",",
            "e",
            ".",
            "GMT",
            "99999999999999999999",
            "\t",
        ],
        1,
    )
    .prop_map(|mut ops| ops.remove(0))
}

proptest! {
    #![proptest_config(support::config(1))]

    /// `Link` parsing on any text: entries' targets are trimmed, relation types are lowercase
    /// words.
    #[test]
    fn link_header_values(value in value_bytes(link_seeds().to_vec())) {
        let text = String::from_utf8_lossy(&value).into_owned();
        bounded("Link", &text, || {
            for (target, rels) in testing::parse_link_header(&text) {
                assert_eq!(target.trim(), target);
                assert!(rels.iter().all(|r| !r.is_empty() && !r.chars().any(|c| c.is_ascii_whitespace() || c.is_ascii_uppercase())), "{rels:?}");
            }
        })?;
    }

    /// The next page's URL from any pagination headers, in both modes.
    #[test]
    fn pagination_headers(
        current in prop::sample::select(CURRENT_URLS),
        links in prop::collection::vec(value_bytes(link_seeds().to_vec()), 0..3),
        next_page in prop::option::of(number_bytes()),
        others in prop::collection::vec((prop::sample::select(&["x-page", "x-per-page", "x-prev-page", "x-total", "x-total-pages"][..]), number_bytes()), 0..4),
        seeded in seeded_headers(),
    ) {
        let mut pairs: Vec<(&str, Vec<u8>)> = links.into_iter().map(|l| ("link", l)).collect();
        pairs.extend(seeded);
        if let Some(page) = next_page {
            pairs.push(("x-next-page", page));
        }
        pairs.extend(others);
        let headers = header_map(&pairs);
        let current: Url = current.parse().expect("a URL");
        bounded("pagination headers", &(&current, &headers), || {
            for mode in [PaginationMode::Offset, PaginationMode::Keyset] {
                match testing::next_page_url(&current, &headers, mode) {
                    Ok(Some(next)) => {
                        assert_eq!(
                            (next.scheme(), next.username(), next.password(), next.host(), next.port(), next.path(), next.fragment()),
                            (current.scheme(), current.username(), current.password(), current.host(), current.port(), current.path(), current.fragment()),
                            "the next page left the endpoint: {next}"
                        );
                    }
                    Ok(None) => {}
                    Err(message) => assert!(!message.is_empty()),
                }
            }
        })?;
    }

    /// Rate-limit headers on any status: what the client learns, and how long it pauses.
    #[test]
    fn rate_limit_headers(
        status in 100u16..1000,
        remaining in prop::option::of(number_bytes()),
        reset in prop::option::of(prop_oneof![number_bytes(), "-?[0-9]{1,25}".prop_map(String::into_bytes)]),
        retry_after in prop::option::of(prop_oneof![number_bytes(), http_date()]),
        extra in prop::collection::vec((prop::sample::select(&["ratelimit-limit", "ratelimit-observed", "ratelimit-name", "ratelimit-resettime", "retry-after"][..]), number_bytes()), 0..3),
        requests_per_minute in prop_oneof![Just(600u32), 0u32..100, any::<u32>()],
        list_scope in any::<bool>(),
        wall_now in any_now(),
        seeded in seeded_headers(),
    ) {
        let mut pairs = Vec::new();
        if let Some(v) = remaining {
            pairs.push(("ratelimit-remaining", v));
        }
        if let Some(v) = reset {
            pairs.push(("ratelimit-reset", v));
        }
        if let Some(v) = retry_after {
            pairs.push(("retry-after", v));
        }
        pairs.extend(extra);
        pairs.extend(seeded);
        let headers = header_map(&pairs);
        let status = StatusCode::from_u16(status).expect("a status code");
        bounded("rate-limit headers", &(status, &headers, wall_now), || {
            let limiter = RateLimiter::new(requests_per_minute);
            let max = limiter.settings().max_pause;
            let scope = if list_scope { LimitScope::ProjectJobsList } else { LimitScope::Instance };
            let (_, retry_after) = testing::observe_rate_limit_headers(
                &limiter, scope, status, &headers, Instant::now(), wall_now,
            );
            assert!(retry_after.is_none_or(|d| d <= max), "{retry_after:?}");
            for scope in [LimitScope::Instance, LimitScope::ProjectJobsList] {
                let paused = limiter.paused_for(scope);
                assert!(paused.is_none_or(|d| d <= max), "paused for {paused:?}");
            }
            for value in headers.values() {
                if let Ok(text) = value.to_str() {
                    let _ = testing::parse_retry_after(text, wall_now);
                    let _ = testing::parse_reset(text, wall_now);
                }
            }
        })?;
    }

    /// `Retry-After` and `RateLimit-Reset` parsers on any text at any moment.
    #[test]
    fn rate_limit_values(
        text in prop_oneof![any::<String>(), number_bytes().prop_map(|b| String::from_utf8_lossy(&b).into_owned()), http_date().prop_map(|b| String::from_utf8(b).unwrap())],
        wall_now in any_now(),
    ) {
        bounded("rate-limit values", &(&text, wall_now), || {
            let _ = testing::parse_retry_after(&text, wall_now);
            let _ = testing::parse_reset(&text, wall_now);
        })?;
    }
}
