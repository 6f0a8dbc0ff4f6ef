//! Mutations of seed inputs, as proptest strategies: a mutated input is a seed plus a list of
//! operations, so proptest shrinks a failure towards the seed and the fewest operations.
//!
//! - [`ByteOp`]: byte flips, truncation, deletion, duplication, splicing with another seed,
//!   insertion of a token of the input's language or of odd Unicode;
//! - [`JsonOp`]: the same seeds seen as JSON trees: a value replaced by another JSON type, a huge
//!   or fractional number, an extreme timestamp, deep nesting, odd Unicode; a key removed or
//!   repeated.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

/// Inputs never grow past this many bytes (the point is odd inputs, not big ones: size limits
/// are tested where the code has them).
pub const MAX_LEN: usize = 256 * 1024;

/// Strings that break naive text handling: direction overrides, combining marks, characters
/// outside the BMP, a byte-order mark, NUL, a character whose lowercase is longer, a lone CR.
pub const ODD_UNICODE: &[&str] = &[
    "\u{202E}",
    "\u{FEFF}",
    "e\u{0301}",
    "\u{1D54F}",
    "\u{10FFFF}",
    "\u{0}",
    "\u{130}",
    "ß",
    "\u{1F469}\u{200D}\u{1F469}\u{200D}\u{1F467}",
    "\r",
    "\u{2028}",
    "µ",
    "é",
    "\u{FFFD}",
    "\u{7F}",
    "日本語",
    "\u{0645}\u{0631}\u{062D}\u{0628}\u{0627}",
];

/// One edit of a byte string.
#[derive(Debug, Clone)]
pub enum ByteOp {
    /// Flips one bit.
    Flip(Index, u8),
    /// Sets a byte to one that often matters (quotes, brackets, NUL, 0xFF, a UTF-8 lead byte).
    Set(Index, u8),
    /// Cuts the input here.
    Truncate(Index),
    /// Removes up to `n` bytes.
    Delete(Index, u16),
    /// Repeats up to `n` bytes at the position, `times` times.
    Duplicate(Index, u16, u8),
    /// Inserts a token of the input's language, or odd Unicode.
    Insert(Index, String),
    /// Replaces the input from here on with the tail of another seed.
    Splice(Index, Index, Index),
}

const INTERESTING_BYTES: &[u8] = &[
    b'"', b'\'', b'\\', b'{', b'}', b'[', b']', b':', b',', b'-', b'#', b'&', b'*', b'!', b'|',
    b'>', b'<', b';', b'=', b' ', b'\t', b'\n', b'\r', b'0', b'9', b'.', b'e', 0, 0x7F, 0x80, 0xBF,
    0xC0, 0xC3, 0xE2, 0xED, 0xF0, 0xF4, 0xF5, 0xFF,
];

/// Byte edits whose insertions are drawn from `tokens` (and [`ODD_UNICODE`]).
pub fn byte_ops(
    tokens: &'static [&'static str],
    max_ops: usize,
) -> impl Strategy<Value = Vec<ByteOp>> {
    let insertion = prop_oneof![
        4 => prop::sample::select(tokens).prop_map(str::to_owned),
        1 => prop::sample::select(ODD_UNICODE).prop_map(str::to_owned),
        1 => ".{0,8}",
    ];
    let op = prop_oneof![
        3 => (any::<Index>(), prop_oneof![4 => 0u8..7, 1 => Just(7u8)])
            .prop_map(|(at, bit)| ByteOp::Flip(at, bit)),
        2 => (any::<Index>(), prop::sample::select(INTERESTING_BYTES))
            .prop_map(|(at, b)| ByteOp::Set(at, b)),
        1 => any::<Index>().prop_map(ByteOp::Truncate),
        2 => (any::<Index>(), 1u16..64).prop_map(|(at, n)| ByteOp::Delete(at, n)),
        1 => (any::<Index>(), 1u16..256, 1u8..16).prop_map(|(at, n, t)| ByteOp::Duplicate(at, n, t)),
        4 => (any::<Index>(), insertion).prop_map(|(at, s)| ByteOp::Insert(at, s)),
        1 => (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(at, seed, from)| ByteOp::Splice(at, seed, from)),
    ];
    prop::collection::vec(op, 1..=max_ops)
}

/// Applies `ops` to `input` in order; `seeds` are the splicing partners.
pub fn apply_bytes(input: &[u8], ops: &[ByteOp], seeds: &[&[u8]]) -> Vec<u8> {
    let mut out = input.to_vec();
    for op in ops {
        // Positions are taken among len + 1 places, so the end is reachable too.
        let place = |at: &Index, len: usize| at.index(len + 1);
        match op {
            ByteOp::Flip(at, bit) if !out.is_empty() => {
                let i = at.index(out.len());
                out[i] ^= 1 << bit;
            }
            ByteOp::Set(at, byte) if !out.is_empty() => {
                let i = at.index(out.len());
                out[i] = *byte;
            }
            ByteOp::Truncate(at) => out.truncate(place(at, out.len())),
            ByteOp::Delete(at, n) => {
                let from = place(at, out.len());
                let to = (from + usize::from(*n)).min(out.len());
                out.drain(from..to);
            }
            ByteOp::Duplicate(at, n, times) => {
                let from = place(at, out.len());
                let to = (from + usize::from(*n)).min(out.len());
                let piece = out[from..to].to_vec();
                for _ in 0..*times {
                    out.splice(to..to, piece.iter().copied());
                }
            }
            ByteOp::Insert(at, text) => {
                let at = place(at, out.len());
                out.splice(at..at, text.bytes());
            }
            ByteOp::Splice(at, seed, from) if !seeds.is_empty() => {
                let other = seeds[seed.index(seeds.len())];
                let at = place(at, out.len());
                let from = place(from, other.len());
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            _ => {}
        }
        out.truncate(MAX_LEN);
    }
    out
}

/// JSON numbers that sit on the edges of the types they are decoded into (as raw text: some do
/// not fit any Rust number).
pub const EDGE_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-1",
    "1",
    "0.5",
    "-0.0",
    "9007199254740993",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "123456789012345678901234567890",
    "1e308",
    "-1e308",
    "1e309",
    "1e400",
    "1e-400",
    "4.9e-324",
    "1.7976931348623157e308",
    "9.3e18",
    "315537897599.999",
    "315537897600",
    "-315537897600",
    "253402300800",
    "1e20",
    "3.4e38",
    "1E2",
    "01",
    "1.",
    ".1",
    "+1",
    "NaN",
    "Infinity",
    "-Infinity",
];

/// Timestamps on and past the edges of what GitLab sends and jiff represents.
pub const EDGE_TIMESTAMPS: &[&str] = &[
    "9999-12-31T23:59:59.999999999Z",
    "9999-12-30T22:00:00.999999999Z",
    "-009999-01-02T01:59:59Z",
    "-009999-01-01T00:00:00Z",
    "+009999-12-31T23:59:59Z",
    "+010000-01-01T00:00:00Z",
    "0000-01-01T00:00:00Z",
    "1970-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999Z",
    "1970-01-01T00:00:00.0005Z",
    "2026-11-23T10:00:00+25:59",
    "2026-11-23T10:00:00-25:59",
    "2026-11-23T10:00:00+26:00",
    "2016-12-31T23:59:60Z",
    "2026-02-30T00:00:00Z",
    "2026-11-23 10:00:00",
    "2026-11-23T10:00:00",
    "2026-11-23T10:00:00.1234567891Z",
    "2026-11-23T10:00:00,5Z",
    "2026-11-23t10:00:00z",
    "2026-11-23T10:00:00Z[Europe/Berlin]",
    "2026-W48-1T10:00:00Z",
    "",
];

/// A JSON text to put in place of a value.
#[derive(Debug, Clone)]
pub enum Fragment {
    Null,
    Bool(bool),
    /// One of [`EDGE_NUMBERS`], raw.
    Number(&'static str),
    /// A generated number, raw (e.g. a negative fraction, a long exponent).
    RawNumber(String),
    /// A string (escaped as JSON).
    Text(String),
    /// One of [`EDGE_TIMESTAMPS`] or a generated RFC 3339-like text, as a string.
    Timestamp(String),
    EmptyArray,
    EmptyObject,
    /// `[[[…]]]` this deep.
    DeepArray(u16),
    /// `{"a":{"a":…}}` this deep.
    DeepObject(u16),
    /// A long string of one repeated piece.
    LongText(String, u32),
    /// Raw JSON tokens that do not form a value (a syntax error in place).
    Garbage(&'static str),
}

impl Fragment {
    fn render(&self) -> String {
        match self {
            Fragment::Null => "null".to_owned(),
            Fragment::Bool(b) => b.to_string(),
            Fragment::Number(n) => (*n).to_owned(),
            Fragment::RawNumber(n) => n.clone(),
            Fragment::Text(s) | Fragment::Timestamp(s) => Value::String(s.clone()).to_string(),
            Fragment::EmptyArray => "[]".to_owned(),
            Fragment::EmptyObject => "{}".to_owned(),
            Fragment::DeepArray(n) => {
                let n = usize::from(*n);
                format!("{}{}", "[".repeat(n), "]".repeat(n))
            }
            Fragment::DeepObject(n) => {
                let n = usize::from(*n);
                format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n))
            }
            Fragment::LongText(piece, times) => {
                let times = (*times as usize).min(MAX_LEN / piece.len().max(1));
                Value::String(piece.repeat(times)).to_string()
            }
            Fragment::Garbage(g) => (*g).to_owned(),
        }
    }
}

pub fn fragment() -> impl Strategy<Value = Fragment> {
    let timestamp = prop_oneof![
        prop::sample::select(EDGE_TIMESTAMPS).prop_map(str::to_owned),
        "[+-]?[0-9]{4,6}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})",
    ];
    prop_oneof![
        2 => Just(Fragment::Null),
        1 => any::<bool>().prop_map(Fragment::Bool),
        4 => prop::sample::select(EDGE_NUMBERS).prop_map(Fragment::Number),
        1 => "-?[0-9]{1,30}(\\.[0-9]{1,30})?([eE][+-]?[0-9]{1,4})?".prop_map(Fragment::RawNumber),
        3 => prop_oneof![
            prop::sample::select(ODD_UNICODE).prop_map(str::to_owned),
            // Values the job fields know, and near misses.
            prop::sample::select(&[
                "failed", "success", "pending", "manual", "scheduled", "canceling", "FAILED",
                "stuck_or_timeout_failure", "stuck_pending_no_matching_runners", "main",
                "refs/heads/main", "*", "**", "[", "{", "v1.*", "release/*", "..", "/", "",
            ][..])
            .prop_map(str::to_owned),
            any::<String>(),
        ]
        .prop_map(Fragment::Text),
        4 => timestamp.prop_map(Fragment::Timestamp),
        1 => Just(Fragment::EmptyArray),
        1 => Just(Fragment::EmptyObject),
        1 => prop_oneof![3 => 1u16..140, 1 => 1000u16..5000].prop_map(Fragment::DeepArray),
        1 => prop_oneof![3 => 1u16..140, 1 => 1000u16..5000].prop_map(Fragment::DeepObject),
        1 => (prop::sample::select(ODD_UNICODE).prop_map(str::to_owned), 1u32..50_000)
            .prop_map(|(p, n)| Fragment::LongText(p, n)),
        1 => prop::sample::select(&["{", "]", "\"", "\"\\ud800\"", "\"\\uDC00\\uD800\"", "\"\\x\"", "tru", "nul", "[1,]", "{\"a\" 1}", "\"a\u{0}b\""][..])
            .prop_map(Fragment::Garbage),
    ]
}

/// The fields of a GitLab job that jobwarden reads, and some it skips, so that structural edits
/// hit them often.
pub const JOB_FIELDS: &[&str] = &[
    "id",
    "status",
    "stage",
    "name",
    "ref",
    "tag",
    "allow_failure",
    "created_at",
    "started_at",
    "finished_at",
    "erased_at",
    "queued_duration",
    "duration",
    "pipeline",
    "failure_reason",
    "artifacts_expire_at",
    "archived",
    "artifacts",
    "artifacts_file",
    "runner",
    "runner_manager",
    "user",
    "commit",
    "project",
    "tag_list",
    "downstream_pipeline",
    "coverage",
    "web_url",
];

/// One edit of a JSON tree.
#[derive(Debug, Clone)]
pub enum JsonOp {
    /// Follows the indexes down from the root (object members, array items) and replaces the
    /// value reached.
    Replace(Vec<Index>, Fragment),
    /// Sets a named field of the item-th job of a page (or of the job itself).
    SetField(Index, &'static str, Fragment),
    /// Sets a field of the item-th job's `pipeline`.
    SetPipelineField(Index, &'static str, Fragment),
    /// Removes the value reached (a member or an item).
    Remove(Vec<Index>),
    /// Repeats a member of an object (the text then has the key twice).
    RepeatKey(Vec<Index>, Fragment),
    /// Sets the value at a path of member names and array indexes (`"0"`), creating what is
    /// missing on the way.
    SetPath(&'static [&'static str], Fragment),
}

/// Edits of any JSON tree: a value replaced or removed, a key repeated.
pub fn tree_op() -> impl Strategy<Value = JsonOp> {
    let path = prop::collection::vec(any::<Index>(), 0..6);
    prop_oneof![
        3 => (path.clone(), fragment()).prop_map(|(p, f)| JsonOp::Replace(p, f)),
        2 => path.clone().prop_map(JsonOp::Remove),
        1 => (path, fragment()).prop_map(|(p, f)| JsonOp::RepeatKey(p, f)),
    ]
}

/// Edits of a job or a page of jobs, mostly of the fields jobwarden reads.
pub fn job_ops(max_ops: usize) -> impl Strategy<Value = Vec<JsonOp>> {
    let op = prop_oneof![
        3 => tree_op(),
        5 => (any::<Index>(), prop::sample::select(JOB_FIELDS), fragment())
            .prop_map(|(i, k, f)| JsonOp::SetField(i, k, f)),
        2 => (any::<Index>(), prop::sample::select(&["id", "created_at", "status", "ref", "iid"][..]), fragment())
            .prop_map(|(i, k, f)| JsonOp::SetPipelineField(i, k, f)),
    ];
    prop::collection::vec(op, 1..=max_ops)
}

/// The marker put in the tree where a fragment's raw text goes.
fn marker(n: usize) -> String {
    format!("\u{1}fuzz-fragment-{n}\u{1}")
}

/// The value `path` leads to (it stops early at a scalar or an empty collection).
fn walk<'v>(value: &'v mut Value, path: &[Index]) -> &'v mut Value {
    let mut here = value;
    for step in path {
        let len = match &*here {
            Value::Object(map) if !map.is_empty() => map.len(),
            Value::Array(items) if !items.is_empty() => items.len(),
            _ => break,
        };
        let i = step.index(len);
        here = match here {
            Value::Object(map) => map.values_mut().nth(i).expect("in range"),
            Value::Array(items) => &mut items[i],
            _ => unreachable!(),
        };
    }
    here
}

/// The member `step` of an object, or item `step` of an array (the last one when past the
/// end), made to exist.
fn step_into<'v>(here: &'v mut Value, step: &str) -> &'v mut Value {
    if let Ok(i) = step.parse::<usize>() {
        if !here.is_array() {
            *here = Value::Array(Vec::new());
        }
        let items = here.as_array_mut().expect("an array");
        if items.is_empty() {
            items.push(Value::Null);
        }
        let i = i.min(items.len() - 1);
        return &mut items[i];
    }
    if !here.is_object() {
        *here = Value::Object(serde_json::Map::new());
    }
    let map = here.as_object_mut().expect("an object");
    map.entry(step.to_owned()).or_insert(Value::Null)
}

/// The item-th job of a page, or the value itself when it is not an array.
fn job_of<'v>(value: &'v mut Value, item: &Index) -> &'v mut Value {
    let len = value.as_array().map_or(0, Vec::len);
    if len == 0 {
        return value;
    }
    &mut value.as_array_mut().expect("an array")[item.index(len)]
}

/// Applies `ops` to the JSON `seed` and renders the result as text.
pub fn apply_json(seed: &Value, ops: &[JsonOp]) -> Vec<u8> {
    let mut value = seed.clone();
    let mut fragments: Vec<String> = Vec::new();
    let put = |fragment: &Fragment, fragments: &mut Vec<String>| {
        fragments.push(fragment.render());
        Value::String(marker(fragments.len() - 1))
    };
    let mut repeats: Vec<(String, String)> = Vec::new();
    for op in ops {
        match op {
            JsonOp::Replace(path, fragment) => {
                *walk(&mut value, path) = put(fragment, &mut fragments);
            }
            JsonOp::SetField(item, key, fragment) => {
                if let Value::Object(map) = job_of(&mut value, item) {
                    map.insert((*key).to_owned(), put(fragment, &mut fragments));
                }
            }
            JsonOp::SetPipelineField(item, key, fragment) => {
                if let Value::Object(job) = job_of(&mut value, item)
                    && let Some(Value::Object(pipeline)) = job.get_mut("pipeline")
                {
                    pipeline.insert((*key).to_owned(), put(fragment, &mut fragments));
                }
            }
            JsonOp::Remove(path) => {
                if let Some((last, parent)) = path.split_last() {
                    match walk(&mut value, parent) {
                        Value::Object(map) if !map.is_empty() => {
                            let key = map.keys().nth(last.index(map.len())).cloned();
                            if let Some(key) = key {
                                map.remove(&key);
                            }
                        }
                        Value::Array(items) if !items.is_empty() => {
                            let i = last.index(items.len());
                            items.remove(i);
                        }
                        _ => {}
                    }
                }
            }
            JsonOp::SetPath(path, fragment) => {
                let mut here = &mut value;
                for step in *path {
                    here = step_into(here, step);
                }
                *here = put(fragment, &mut fragments);
            }
            JsonOp::RepeatKey(path, fragment) => {
                if let Value::Object(map) = walk(&mut value, path)
                    && let Some(key) = map.keys().next().cloned()
                {
                    // A second member of the same name is added in the text, after the first.
                    let placeholder = marker(1_000_000 + repeats.len());
                    let old = map.remove(&key).expect("the key is there");
                    map.insert(placeholder.clone(), old);
                    let quoted_key = Value::String(key).to_string();
                    let raw = fragment.render();
                    repeats.push((
                        Value::String(placeholder).to_string(),
                        format!("{quoted_key}:{raw},{quoted_key}"),
                    ));
                }
            }
        }
    }
    let mut text = value.to_string();
    for (placeholder, replacement) in repeats {
        text = text.replacen(&placeholder, &replacement, 1);
    }
    for (n, raw) in fragments.iter().enumerate() {
        let quoted = Value::String(marker(n)).to_string();
        text = text.replacen(&quoted, raw, 1);
    }
    let mut bytes = text.into_bytes();
    // Each fragment is bounded; several long ones together are cut (a truncated body, then).
    bytes.truncate(4 * MAX_LEN);
    bytes
}
