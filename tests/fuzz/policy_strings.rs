//! The small languages of a policy, on arbitrary strings: Go durations, `HH:MM` clock times,
//! weekly windows with time zones, and globs (compiled as `compile` compiles them, matched
//! against arbitrary job fields). Besides never panicking, each parser agrees with the CRD
//! pattern the apiserver checks the same field with.

use crate::mutate::{EDGE_NUMBERS, ODD_UNICODE};
use crate::support::{self, any_now, bounded};
use jiff::{SignedDuration, Timestamp};
use jobwarden::crd::{self, JobPolicySpec};
use jobwarden::gitlab::records::{JobRecord, JobWire, Names};
use jobwarden::policy::duration::{HumanDuration, parse_go_duration};
use jobwarden::policy::window::ClockTime;
use jobwarden::policy::{PolicyKey, compile};
use proptest::prelude::*;
use serde_json::json;
use std::sync::LazyLock;

static DURATION: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(crd::DURATION_PATTERN).unwrap());
static CLOCK_TIME: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(crd::CLOCK_TIME_PATTERN).unwrap());
static CLOCK_END: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(crd::CLOCK_END_PATTERN).unwrap());

/// Nanoseconds in each unit of a Go duration.
const UNIT_NANOS: &[u128] = &[
    1,
    1_000,
    1_000_000,
    1_000_000_000,
    60_000_000_000,
    3_600_000_000_000,
];

/// Strings near the duration grammar: numbers of any size (the edges of u64, u128 and
/// i64 nanoseconds included) with and without fractions, units and near-units, repeated.
fn duration_text() -> impl Strategy<Value = String> {
    let unit = prop::sample::select(
        &[
            "ns", "us", "µs", "ms", "s", "m", "h", "", "H", "d", "μs", "sec", "mm",
        ][..],
    );
    let whole = prop_oneof![
        "[0-9]{1,4}",
        "[0-9]{15,45}",
        prop::sample::select(EDGE_NUMBERS).prop_map(str::to_owned),
        // The largest whole numbers of each unit before u128 overflows, and their neighbours.
        (prop::sample::select(UNIT_NANOS), 0u128..3)
            .prop_map(|(unit, minus)| (u128::MAX / unit - minus).to_string()),
        (prop::sample::select(UNIT_NANOS), 0u128..3)
            .prop_map(|(unit, minus)| (i64::MAX as u128 / unit - minus).to_string()),
    ];
    let fraction = prop_oneof![
        Just(String::new()),
        "\\.[0-9]{1,3}",
        "\\.9{1,40}",
        "\\.[0-9]{10,40}",
        Just(".".to_owned()),
    ];
    let component = (whole, fraction, unit).prop_map(|(w, f, u)| format!("{w}{f}{u}"));
    prop_oneof![
        4 => prop::collection::vec(component, 1..4).prop_map(|parts| parts.concat()),
        1 => any::<String>(),
        1 => (".{0,4}", prop::sample::select(ODD_UNICODE)).prop_map(|(a, b)| format!("{a}{b}")),
    ]
}

/// A spec whose first rule carries `matcher`, with the rest valid.
fn spec_with_match(matcher: serde_json::Value, jobs: serde_json::Value) -> Option<JobPolicySpec> {
    serde_json::from_value(json!({
        "gitlab": {"url": "https://gitlab.example.com", "tokenSecretRef": {"name": "t", "key": "token"}},
        "projects": ["1"],
        "jobs": jobs,
        "rules": [{"name": "r", "match": matcher, "cancel": {}}],
    }))
    .ok()
}

fn record(name: &str, stage: &str, git_ref: &str) -> JobRecord {
    let wire = JobWire {
        id: 1,
        status: jobwarden::gitlab::JobStatus::Pending,
        stage: stage.to_owned(),
        name: name.to_owned(),
        git_ref: git_ref.to_owned(),
        tag: false,
        allow_failure: false,
        created_at: Timestamp::UNIX_EPOCH,
        started_at: None,
        finished_at: None,
        erased_at: None,
        queued_duration: None,
        pipeline: Default::default(),
        failure_reason: None,
        artifacts_expire_at: None,
        archived: None,
    };
    JobRecord::from_wire(wire, Timestamp::UNIX_EPOCH, &mut Names::default())
}

fn glob_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[*?\\[\\]{}!,/\\\\a-c^.-]{0,16}",
        1 => any::<String>(),
        1 => prop::sample::select(ODD_UNICODE).prop_map(str::to_owned),
        1 => (0usize..300).prop_map(|n| "{".repeat(n) + &"a,".repeat(n) + &"}".repeat(n)),
        1 => (0usize..300).prop_map(|n| "*?".repeat(n)),
    ]
}

fn field_text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-c/.*?{}\\[\\]-]{0,24}", any::<String>()]
}

proptest! {
    #![proptest_config(support::config(1))]

    /// `parse_go_duration` on anything: never a panic; what it accepts the CRD pattern accepts,
    /// is at most 292 years, and prints back (to the millisecond) as a duration it accepts.
    #[test]
    fn durations(text in duration_text()) {
        bounded("duration", &text, || {
            match parse_go_duration(&text) {
                Ok(d) => {
                    assert!(DURATION.is_match(&text), "accepted {text:?}, which the CRD refuses");
                    assert!(d >= SignedDuration::ZERO && d.as_nanos() <= i128::from(i64::MAX), "{text:?} → {d:?}");
                    let shown = HumanDuration(d).to_string();
                    let back = parse_go_duration(&shown)
                        .unwrap_or_else(|e| panic!("{text:?} → {d:?} printed as {shown:?}: {e}"));
                    let lost = d - back;
                    assert!(
                        lost >= SignedDuration::ZERO && lost < SignedDuration::from_millis(1),
                        "{text:?} → {d:?} → {shown:?} → {back:?}"
                    );
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        })?;
    }

    /// Any duration prints, negative ones and both ends included.
    #[test]
    fn durations_print(secs in any::<i64>(), nanos in -999_999_999i32..=999_999_999) {
        let d = SignedDuration::new(secs, nanos);
        bounded("duration printing", &d, || {
            let _ = HumanDuration(d).to_string();
            let _ = HumanDuration(SignedDuration::MIN).to_string();
            let _ = HumanDuration(SignedDuration::MAX).to_string();
        })?;
    }

    /// `ClockTime::parse` on anything: it accepts exactly what the CRD's patterns accept.
    #[test]
    fn clock_times(text in prop_oneof!["[0-9]{1,3}:[0-9]{1,3}", "[0-9:+-]{0,6}", any::<String>()]) {
        bounded("clock time", &text, || {
            for (end_of_day, pattern) in [(false, &*CLOCK_TIME), (true, &*CLOCK_END)] {
                match ClockTime::parse(&text, end_of_day) {
                    Ok(t) => {
                        assert!(pattern.is_match(&text), "{text:?} accepted, the CRD refuses it");
                        assert!(t.0 <= 24 * 60);
                        assert_eq!(t.to_string(), text);
                    }
                    Err(_) => assert!(!pattern.is_match(&text), "{text:?} refused, the CRD accepts it"),
                }
            }
        })?;
    }

    /// Weekly windows compiled from any days, times and time zone, asked about any moment.
    #[test]
    fn windows(
        days in prop::collection::vec(prop::sample::select(&["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][..]), 0..9),
        from in prop_oneof![Just(None), "[0-2][0-9]:[0-5][0-9]".prop_map(Some), any::<String>().prop_map(Some)],
        to in prop_oneof![Just(None), "[0-2][0-9]:[0-5][0-9]".prop_map(Some), Just(Some("24:00".to_owned()))],
        time_zone in prop_oneof![
            prop::sample::select(&["UTC", "Europe/Berlin", "Pacific/Chatham", "Pacific/Kiritimati", "America/St_Johns", "Asia/Kathmandu", "Australia/Lord_Howe", "Antarctica/Troll", "Etc/GMT-14", "Etc/GMT+12", "Etc/Unknown", "europe/BERLIN", "UTC0", "CET", "EST5EDT", "posixrules", "Factory", "right/UTC", "zone.tab", "tzdata.zi", "leapseconds", ".", "..", "/", "", "/dev/null", "../../../../etc/passwd", "Europe/", "Europe//Berlin"][..]).prop_map(str::to_owned),
            "[A-Za-z_/+0-9.-]{0,40}",
            any::<String>(),
        ],
        moments in prop::collection::vec(any_now(), 1..8),
    ) {
        let mut window = json!({"days": days, "timeZone": time_zone});
        if let Some(from) = &from {
            window["from"] = json!(from);
        }
        if let Some(to) = &to {
            window["to"] = json!(to);
        }
        bounded("window", &(&window, &moments), || {
            let Some(spec) = spec_with_match(json!({"window": window}), json!(null)) else {
                return;
            };
            if let Ok(policy) = compile(PolicyKey::new("ns", "p"), &spec) {
                let window = policy.rules[0].conditions.window.as_ref().expect("a window");
                let _ = window.to_string();
                for now in &moments {
                    let _ = window.contains(*now);
                }
            }
        })?;
    }

    /// Globs compiled as `spec.jobs` and rule filters, matched against any ref, name and stage.
    #[test]
    fn globs(
        refs in prop::collection::vec(glob_text(), 0..4),
        names in prop::collection::vec(glob_text(), 0..4),
        stages in prop::collection::vec(glob_text(), 0..4),
        values in prop::collection::vec((field_text(), field_text(), field_text()), 1..6),
    ) {
        bounded("globs", &(&refs, &names, &stages, &values), || {
            let matcher = json!({"refs": refs, "names": names, "stages": stages});
            let Some(spec) = spec_with_match(matcher.clone(), matcher) else {
                return;
            };
            let Ok(policy) = compile(PolicyKey::new("ns", "p"), &spec) else {
                return;
            };
            for (name, stage, git_ref) in &values {
                let job = record(name, stage, git_ref);
                let _ = policy.filter.matches(&job);
                let globs = &policy.rules[0].conditions.globs;
                let _ = globs.matches(&job);
                for list in [&globs.refs, &globs.names, &globs.stages].into_iter().flatten() {
                    let _ = (list.matches(name), list.patterns().len());
                }
            }
        })?;
    }
}
