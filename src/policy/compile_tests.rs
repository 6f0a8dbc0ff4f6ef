use super::*;
use crate::policy::test_support::policy;

fn spec(yaml: &str) -> JobPolicySpec {
    serde_yaml::from_str(yaml).expect("test spec parses")
}

fn errors(yaml: &str) -> Vec<String> {
    match compile(PolicyKey::new("ci", "p"), &spec(yaml)) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

const BASE: &str = "gitlab: {url: 'https://gitlab.example.com', tokenSecretRef: {name: gitlab-api, key: token}}\nprojects: ['42', 'platform/api']\n";

#[test]
fn compiles_the_design_example() {
    let p = compile(
        PolicyKey::new("ci-ops", "ci-hygiene"),
        &spec(&format!(
            "{BASE}interval: 1m\njobs: {{refs: [main, 'release/*'], names: ['rspec*', 'deploy-*'], stages: [test, deploy]}}\n\
             rules:\n\
             - name: retry-transient\n  match: {{statuses: [failed], failureReasons: [stuck_or_timeout_failure, runner_system_failure], logPattern: 'connection reset by peer|no space left on device'}}\n  retry: {{limit: 3, backoff: {{duration: 30s, factor: 2, maxDuration: 10m}}}}\n\
             - name: cancel-stale\n  match: {{statuses: [created, pending], olderThan: 2h}}\n  cancel: {{}}\n\
             - name: play-deploy\n  match: {{statuses: [manual], pipeline: {{stagesSucceeded: [build, test]}}, window: {{days: [Mon, Fri], from: '09:00', to: '17:00', timeZone: Europe/Berlin}}}}\n  play: {{variables: [{{key: TRIGGERED_BY, value: jobwarden}}]}}\n\
             - name: keep\n  match: {{statuses: [success], tag: true, artifactsExpireWithin: 48h}}\n  keepArtifacts: {{}}\n\
             limits: {{maxActionsPerRun: 20, maxActionsPerHour: 200}}\n"
        )),
    )
    .expect("compiles");
    assert_eq!(p.key.to_string(), "ci-ops/ci-hygiene");
    assert_eq!(p.gitlab_url.as_str(), "https://gitlab.example.com/");
    assert_eq!(
        p.projects,
        vec![ProjectRef::Id(42), ProjectRef::Path("platform/api".into())]
    );
    assert_eq!(p.interval, std::time::Duration::from_secs(60));
    assert_eq!(p.rules.len(), 4);
    assert_eq!(
        p.rules[0].action,
        RuleAction::Retry {
            limit: 3,
            backoff: Some(BackoffSchedule {
                base: SignedDuration::from_secs(30),
                factor: 2.0,
                max: Some(SignedDuration::from_mins(10)),
            }),
        }
    );
    assert_eq!(
        p.rules[1].conditions.older_than,
        Some(SignedDuration::from_hours(2))
    );
    assert!(p.filter.refs.as_ref().unwrap().matches("release/1.2"));
    assert!(!p.filter.refs.as_ref().unwrap().matches("feature/x"));
}

#[test]
fn defaults_apply() {
    let p = policy("rules: [{name: r, match: {}, cancel: {}}]");
    assert_eq!(p.interval, std::time::Duration::from_secs(60));
    assert!(!p.dry_run && !p.suspend);
    assert_eq!(p.limits, Limits::default());
    assert_eq!(
        (p.limits.max_actions_per_run, p.limits.max_actions_per_hour),
        (20, 200)
    );
}

#[test]
fn reports_every_error_with_its_field() {
    let got = errors(
        "gitlab: {url: 'ftp://gitlab', tokenSecretRef: {name: Bad_Name, key: 'a b'}}\n\
         projects: ['42', '42', '/lead', 'no-namespace']\n\
         interval: 5s\n\
         jobs: {refs: ['[unclosed']}\n\
         rules:\n\
         - name: Retry\n  match: {statuses: [success], failureReasons: [Stuck], olderThan: 2d, logPattern: '(unclosed'}\n  retry: {limit: 0, backoff: {duration: 1m, factor: 0.5, maxDuration: 30s}}\n\
         - name: two-actions\n  match: {window: {from: '10:00', to: '10:00', timeZone: Mars/Olympus}}\n  cancel: {}\n  play: {}\n\
         - name: none\n  match: {pipeline: {stagesSucceeded: []}}\n\
         - name: play\n  match: {}\n  play: {variables: [{key: A, value: x}, {key: A, value: y}, {key: 'B-C', value: z}]}\n\
         - name: play\n  match: {}\n  keepArtifacts: {}\n\
         limits: {maxActionsPerRun: 20000}\n",
    );
    let expected = [
        "spec.gitlab.url: scheme must be http or https, not \"ftp\"",
        "spec.gitlab.tokenSecretRef.name: must be a Secret name: lowercase letters, digits, '-' and '.', at most 253 characters",
        "spec.gitlab.tokenSecretRef.key: must be a Secret key: letters, digits, '-', '_' and '.', at most 253 characters",
        "spec.projects[1]: duplicate project \"42\"",
        "spec.projects[2]: \"/lead\" is neither a numeric id nor a full path like group/project",
        "spec.projects[3]: \"no-namespace\" is neither a numeric id nor a full path like group/project",
        "spec.interval: must be at least 10s",
        "spec.jobs.refs[0]: invalid glob: unclosed character class; missing ']'",
        "spec.rules[0].name: must be 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit",
        "spec.rules[0].match.failureReasons[0]: \"Stuck\" is not a failure reason (lowercase letters, digits and '_')",
        "spec.rules[0].match.failureReasons: failureReasons only match failed jobs: add failed to statuses (or leave statuses out)",
        "spec.rules[0].match.olderThan: invalid duration \"2d\": expected numbers with units ns, us, µs, ms, s, m or h, e.g. 90s, 5m, 1h30m",
        "spec.rules[0].match.logPattern: regex parse error: unclosed group",
        "spec.rules[0].retry.limit: must be between 1 and 20",
        "spec.rules[0].retry.backoff.factor: must be between 1 and 10",
        "spec.rules[0].retry.backoff.maxDuration: maxDuration must not be shorter than duration",
        "spec.rules[1].match.window.timeZone: unknown time zone \"Mars/Olympus\" (use an IANA name such as Europe/Berlin or UTC)",
        "spec.rules[1]: a rule must have exactly one action: retry, cancel, play or keepArtifacts (found cancel and play)",
        "spec.rules[2].match.pipeline.stagesSucceeded: must name at least one stage",
        "spec.rules[2]: a rule must have exactly one action: retry, cancel, play or keepArtifacts (found none)",
        "spec.rules[3].play.variables[1].key: duplicate variable \"A\"",
        "spec.rules[3].play.variables[2].key: must be 1 to 255 letters, digits or '_'",
        "spec.rules[4].name: duplicate rule name \"play\": rule names must be unique",
        "spec.limits.maxActionsPerRun: must be between 0 and 10000",
    ];
    for e in expected {
        assert!(
            got.iter().any(|g| g == e),
            "missing error {e:?} in:\n{}",
            got.join("\n")
        );
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "unexpected errors:\n{}",
        got.join("\n")
    );
}

#[test]
fn window_edges_are_checked() {
    let got = errors(&format!(
        "{BASE}rules: [{{name: r, match: {{window: {{from: '24:00', to: '25:00'}}}}, cancel: {{}}}}]"
    ));
    assert_eq!(
        got,
        vec![
            "spec.rules[0].match.window.from: invalid time \"24:00\": expected HH:MM between 00:00 and 23:59",
            "spec.rules[0].match.window.to: invalid time \"25:00\": expected HH:MM between 00:00 and 24:00",
        ]
    );
    let same = errors(&format!(
        "{BASE}rules: [{{name: r, match: {{window: {{from: '00:00', to: '00:00'}}}}, cancel: {{}}}}]"
    ));
    assert_eq!(same.len(), 1);
    assert!(same[0].starts_with("spec.rules[0].match.window: from and to must differ"));
}

#[test]
fn spec_errors_display_one_line_per_error() {
    let e = compile(
        PolicyKey::new("ci", "p"),
        &spec(&format!(
            "{BASE}rules: [{{name: r, match: {{logPattern: '[z-a]'}}, cancel: {{}}}}, {{name: s, match: {{olderThan: x}}, cancel: {{}}}}]"
        )),
    )
    .unwrap_err();
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("spec.rules[0].match.logPattern: regex parse error: "),
        "{text}"
    );
    assert!(
        lines[1].starts_with("spec.rules[1].match.olderThan: invalid duration \"x\""),
        "{text}"
    );
}

#[test]
fn oversized_regex_is_rejected() {
    let got = errors(&format!(
        "{BASE}rules: [{{name: r, match: {{logPattern: '\\w{{1000}}\\w{{1000}}'}}, cancel: {{}}}}]"
    ));
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("spec.rules[0].match.logPattern: regex too large"),
        "{got:?}"
    );
}

#[test]
fn url_rules() {
    for (url, msg) in [
        (
            "not a url",
            "spec.gitlab.url: invalid URL: relative URL without a base",
        ),
        (
            "https://user:pw@gitlab.example.com",
            "spec.gitlab.url: must not carry credentials (use tokenSecretRef)",
        ),
        (
            "https://gitlab.example.com/?x=1",
            "spec.gitlab.url: must not have a query or fragment",
        ),
    ] {
        let got = errors(&format!(
            "gitlab: {{url: '{url}', tokenSecretRef: {{name: a, key: b}}}}\nprojects: ['1']\nrules: [{{name: r, match: {{}}, cancel: {{}}}}]"
        ));
        assert_eq!(got, vec![msg.to_owned()], "{url}");
    }
    let p = policy("rules: [{name: r, match: {}, cancel: {}}]");
    assert_eq!(p.gitlab_url.as_str(), "http://127.0.0.1:8080/");
}

#[test]
fn statuses_of_interest_narrow_server_side_listing() {
    let p = policy(
        "rules: [{name: a, match: {statuses: [failed, pending]}, retry: {limit: 1}}, {name: b, match: {}, play: {}}]",
    );
    let got: Vec<JobStatus> = p.statuses_of_interest().unwrap().into_iter().collect();
    assert_eq!(
        got,
        vec![JobStatus::Failed, JobStatus::Manual, JobStatus::Scheduled]
    );
    let any = policy("rules: [{name: a, match: {}, keepArtifacts: {}}]");
    assert_eq!(any.statuses_of_interest(), None);
    let superseded =
        policy("rules: [{name: a, match: {statuses: [pending], superseded: true}, cancel: {}}]");
    assert_eq!(superseded.statuses_of_interest(), None);
}

#[test]
fn backoff_delay_schedule() {
    let b = BackoffSchedule {
        base: SignedDuration::from_secs(30),
        factor: 2.0,
        max: Some(SignedDuration::from_secs(100)),
    };
    let secs: Vec<i64> = (1..=4).map(|n| b.delay(n).as_secs()).collect();
    assert_eq!(secs, vec![30, 60, 100, 100]);
    let uncapped = BackoffSchedule { max: None, ..b };
    assert_eq!(uncapped.delay(3).as_secs(), 120);
    assert!(uncapped.delay(u32::MAX) > SignedDuration::from_hours(1_000_000));
}

const GROUP_BASE: &str = "gitlab: {url: 'https://gitlab.example.com', tokenSecretRef: {name: gitlab-api, key: token}}\nrules: [{name: r, match: {}, cancel: {}}]\n";

#[test]
fn groups_stand_in_for_projects_and_exclusions_match_full_paths_in_any_case() {
    let p = compile(
        PolicyKey::new("ci", "fleet"),
        &spec(&format!(
            "{GROUP_BASE}groups: [{{path: platform}}, {{path: '42', includeSubgroups: false}}]\n\
             excludeProjects: ['platform/legacy-*']\n"
        )),
    )
    .expect("a policy with groups and no projects compiles");
    assert!(p.projects.is_empty());
    assert_eq!(
        p.groups,
        vec![
            GroupSelection {
                group: GroupRef::Path("platform".into()),
                include_subgroups: true,
            },
            GroupSelection {
                group: GroupRef::Id(42),
                include_subgroups: false,
            },
        ]
    );
    let exclude = p.exclude_projects.expect("compiled once, with the policy");
    assert!(exclude.matches("platform/legacy-billing"));
    assert!(exclude.matches("Platform/Legacy-Billing"));
    assert!(exclude.matches("platform/legacy-x/deep"));
    assert!(!exclude.matches("platform/api"));
}

#[test]
fn a_policy_without_projects_or_groups_is_rejected_naming_the_field() {
    assert_eq!(
        errors(GROUP_BASE),
        vec![
            "spec.projects: a policy needs spec.projects or spec.groups (or both): name at least one project or group"
        ]
    );
}

#[test]
fn bad_groups_and_exclusions_are_reported_by_field() {
    assert_eq!(
        errors(&format!(
            "{GROUP_BASE}groups: [{{path: platform}}, {{path: Platform}}, {{path: '/lead'}}, {{path: 'a//b'}}]\n\
             excludeProjects: ['platform/[legacy']\n"
        )),
        vec![
            "spec.groups[1].path: duplicate group \"Platform\"",
            "spec.groups[2].path: \"/lead\" is neither a numeric id nor a full path like group/subgroup",
            "spec.groups[3].path: \"a//b\" is neither a numeric id nor a full path like group/subgroup",
            "spec.excludeProjects[0]: invalid glob: unclosed character class; missing ']'",
        ]
    );
}

#[test]
fn finished_within_is_compiled_and_a_bad_one_is_named() {
    let p = compile(
        PolicyKey::new("ci", "p"),
        &spec(&format!(
            "{BASE}rules: [{{name: r, match: {{statuses: [failed], finishedWithin: 1h30m}}, retry: {{limit: 1}}}}]"
        )),
    )
    .expect("compiles");
    assert_eq!(
        p.rules[0].conditions.finished_within,
        Some(SignedDuration::from_mins(90))
    );
    let got = errors(&format!(
        "{BASE}rules: [{{name: r, match: {{finishedWithin: 3d}}, retry: {{limit: 1}}}}]"
    ));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("spec.rules[0].match.finishedWithin: invalid duration \"3d\""),
        "{got:?}"
    );
}
