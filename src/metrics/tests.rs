use super::*;

/// The sample lines of `metric` (exact name, labels in any order) in the exposition text.
fn samples<'a>(text: &'a str, metric: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

/// The value of the one sample of `metric` whose label set contains every `labels` pair.
fn value(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<&str> = samples(text, metric)
        .into_iter()
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .collect();
    match matching.as_slice() {
        [line] => line.rsplit(' ').next()?.parse().ok(),
        [] => None,
        more => panic!("{metric} {labels:?} matches several samples: {more:?}"),
    }
}

fn has_header(text: &str, metric: &str, kind: &str) -> bool {
    text.lines()
        .any(|line| line.starts_with(&format!("# HELP {metric} ")))
        && text
            .lines()
            .any(|line| line == format!("# TYPE {metric} {kind}"))
}

/// Records one value of every metric.
fn record_everything(metrics: &Metrics) {
    metrics.observe_job_queued("platform/api", "test", 12.0);
    metrics.count_job_failure("platform/api", "test", "stuck_or_timeout_failure");
    metrics.set_jobs_by_status("platform/api", &[("pending", 3), ("running", 2)]);
    metrics.set_pending_age("platform/api", Some(95.5));
    metrics.count_action("ci-ops", "hygiene", "retry-transient", "retry", "succeeded");
    metrics.on_request("/projects/:id/jobs", Some(200), Duration::from_millis(120));
    metrics.on_request(
        "/projects/:id/jobs/:job_id/retry",
        None,
        Duration::from_secs(10),
    );
    metrics.on_rate_limit_remaining("https://gitlab.example.com", 1999);
    metrics.observe_reconcile("ci-ops", "hygiene", 0.3);
    metrics.count_reconcile_error("ci-ops", "hygiene", "api_error");
    metrics.set_policies(&[("ready", 4), ("invalid", 1)]);
}

#[test]
fn every_metric_is_rendered_with_help_type_and_labels() {
    let metrics = Metrics::new();
    record_everything(&metrics);
    let text = metrics.render();

    let families = [
        ("jobwarden_job_queued_duration_seconds", "histogram"),
        ("jobwarden_job_failures_total", "counter"),
        ("jobwarden_jobs", "gauge"),
        ("jobwarden_job_pending_age_seconds", "gauge"),
        ("jobwarden_actions_total", "counter"),
        ("jobwarden_gitlab_requests_total", "counter"),
        ("jobwarden_gitlab_request_duration_seconds", "histogram"),
        ("jobwarden_gitlab_ratelimit_remaining", "gauge"),
        ("jobwarden_reconcile_duration_seconds", "histogram"),
        ("jobwarden_reconcile_errors_total", "counter"),
        ("jobwarden_policies", "gauge"),
        ("jobwarden_build_info", "gauge"),
    ];
    for (name, kind) in families {
        assert!(
            has_header(&text, name, kind),
            "{name} header missing:\n{text}"
        );
    }

    let q = "jobwarden_job_queued_duration_seconds";
    let api = [("project", "platform/api"), ("stage", "test")];
    assert_eq!(value(&text, &format!("{q}_count"), &api), Some(1.0));
    assert_eq!(value(&text, &format!("{q}_sum"), &api), Some(12.0));
    assert_eq!(
        value(
            &text,
            "jobwarden_job_failures_total",
            &[
                ("project", "platform/api"),
                ("stage", "test"),
                ("failure_reason", "stuck_or_timeout_failure")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "jobwarden_jobs",
            &[("project", "platform/api"), ("status", "pending")]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &text,
            "jobwarden_job_pending_age_seconds",
            &[("project", "platform/api")]
        ),
        Some(95.5)
    );
    assert_eq!(
        value(
            &text,
            "jobwarden_actions_total",
            &[
                ("namespace", "ci-ops"),
                ("policy", "hygiene"),
                ("rule", "retry-transient"),
                ("action", "retry"),
                ("outcome", "succeeded")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "jobwarden_gitlab_requests_total",
            &[("endpoint", "/projects/:id/jobs"), ("code", "200")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "jobwarden_gitlab_requests_total",
            &[
                ("endpoint", "/projects/:id/jobs/:job_id/retry"),
                ("code", "error")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "jobwarden_gitlab_request_duration_seconds_count",
            &[("endpoint", "/projects/:id/jobs")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "jobwarden_gitlab_ratelimit_remaining",
            &[("gitlab_host", "gitlab.example.com")]
        ),
        Some(1999.0)
    );
    assert_eq!(
        value(
            &text,
            "jobwarden_reconcile_duration_seconds_count",
            &[("namespace", "ci-ops"), ("policy", "hygiene")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "jobwarden_reconcile_errors_total",
            &[
                ("namespace", "ci-ops"),
                ("policy", "hygiene"),
                ("error", "api_error")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "jobwarden_policies", &[("state", "ready")]),
        Some(4.0)
    );
    assert_eq!(
        value(
            &text,
            "jobwarden_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
}

#[test]
fn a_fresh_registry_exports_build_info_and_every_policy_state() {
    let text = Metrics::new().render();
    assert!(has_header(&text, "jobwarden_build_info", "gauge"));
    for state in POLICY_STATES {
        assert_eq!(
            value(&text, "jobwarden_policies", &[("state", state)]),
            Some(0.0),
            "{state}"
        );
    }
    // Label-keyed families without a sample are not rendered at all (no empty headers).
    assert!(!text.contains("jobwarden_jobs "));
    assert!(!text.contains("# TYPE jobwarden_jobs gauge"));
}

#[test]
fn registries_are_independent() {
    let a = Metrics::new();
    let b = Metrics::new();
    a.count_action("ns", "p", "r", "retry", "succeeded");
    assert!(a.render().contains("jobwarden_actions_total"));
    assert!(!b.render().contains("jobwarden_actions_total"));
}

#[test]
fn label_values_are_escaped() {
    let metrics = Metrics::new();
    metrics.set_pending_age("odd\"name\\with\nnewline", Some(1.0));
    let text = metrics.render();
    assert!(
        text.contains(r#"jobwarden_job_pending_age_seconds{project="odd\"name\\with\nnewline"} 1"#),
        "{text}"
    );
    // Every sample stays on one line.
    assert_eq!(samples(&text, "jobwarden_job_pending_age_seconds").len(), 1);
}

#[test]
fn queue_time_buckets_resolve_seconds_to_hours() {
    let metrics = Metrics::new();
    for seconds in [0.5, 1.5, 45.0, 3000.0, 14400.0, 20000.0] {
        metrics.observe_job_queued("p", "build", seconds);
    }
    let text = metrics.render();
    let bucket = |le: &str| {
        value(
            &text,
            "jobwarden_job_queued_duration_seconds_bucket",
            &[("project", "p"), ("le", le)],
        )
    };
    let expected_bounds: Vec<String> = QUEUED_DURATION_BUCKETS
        .iter()
        .map(|b| b.to_string())
        .chain(["+Inf".to_owned()])
        .collect();
    let rendered_bounds: Vec<&str> = samples(&text, "jobwarden_job_queued_duration_seconds_bucket")
        .iter()
        .filter_map(|line| line.split("le=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(rendered_bounds, expected_bounds);

    // Cumulative counts: an upper bound is inclusive.
    assert_eq!(bucket("1"), Some(1.0)); // 0.5
    assert_eq!(bucket("2"), Some(2.0)); // + 1.5
    assert_eq!(bucket("30"), Some(2.0));
    assert_eq!(bucket("60"), Some(3.0)); // + 45
    assert_eq!(bucket("1800"), Some(3.0));
    assert_eq!(bucket("3600"), Some(4.0)); // + 3000
    assert_eq!(bucket("14400"), Some(5.0)); // + 14400 exactly
    assert_eq!(bucket("+Inf"), Some(6.0)); // + 20000
}

#[test]
fn nonsense_durations_are_not_observed() {
    let metrics = Metrics::new();
    metrics.observe_job_queued("p", "s", f64::NAN);
    metrics.observe_job_queued("p", "s", -1.0);
    metrics.observe_reconcile("ns", "p", f64::INFINITY);
    let text = metrics.render();
    assert!(!text.contains("jobwarden_job_queued_duration_seconds"));
    assert!(!text.contains("jobwarden_reconcile_duration_seconds"));
}

#[test]
fn statuses_that_drop_out_are_set_back_to_zero() {
    let metrics = Metrics::new();
    metrics.set_jobs_by_status("p", &[("pending", 5), ("running", 2)]);
    metrics.set_jobs_by_status("q", &[("pending", 7)]);
    metrics.set_jobs_by_status("p", &[("running", 1)]);
    let text = metrics.render();
    let jobs = |project, status| {
        value(
            &text,
            "jobwarden_jobs",
            &[("project", project), ("status", status)],
        )
    };
    assert_eq!(jobs("p", "pending"), Some(0.0));
    assert_eq!(jobs("p", "running"), Some(1.0));
    // Another project is untouched.
    assert_eq!(jobs("q", "pending"), Some(7.0));
    assert_eq!(jobs("q", "running"), None);
}

#[test]
fn repeated_and_free_form_statuses_are_bounded() {
    let metrics = Metrics::new();
    metrics.set_jobs_by_status(
        "p",
        &[
            ("brand_new_status", 1),
            ("not a token!", 2),
            ("https://evil.example/x", 3),
        ],
    );
    let text = metrics.render();
    let jobs = |status| {
        value(
            &text,
            "jobwarden_jobs",
            &[("project", "p"), ("status", status)],
        )
    };
    assert_eq!(jobs("brand_new_status"), Some(1.0));
    assert_eq!(jobs("other"), Some(5.0));
    assert!(!text.contains("evil"));
}

#[test]
fn failure_reasons_are_kept_as_gitlab_sends_them_but_bounded() {
    let metrics = Metrics::new();
    metrics.count_job_failure("p", "test", "stuck_pending_no_matching_runners");
    metrics.count_job_failure("p", "test", &"x".repeat(65));
    metrics.count_job_failure("p", "test", "");
    let text = metrics.render();
    let failures = |reason| {
        value(
            &text,
            "jobwarden_job_failures_total",
            &[("project", "p"), ("failure_reason", reason)],
        )
    };
    assert_eq!(failures("stuck_pending_no_matching_runners"), Some(1.0));
    assert_eq!(failures("other"), Some(2.0));
}

#[test]
fn pending_age_is_zero_when_nothing_waits_and_projects_can_be_forgotten() {
    let metrics = Metrics::new();
    metrics.set_pending_age("p", Some(120.0));
    metrics.set_pending_age("p", None);
    metrics.set_jobs_by_status("p", &[("pending", 1)]);
    let text = metrics.render();
    assert_eq!(
        value(
            &text,
            "jobwarden_job_pending_age_seconds",
            &[("project", "p")]
        ),
        Some(0.0)
    );

    metrics.forget_project("p");
    let text = metrics.render();
    assert!(samples(&text, "jobwarden_job_pending_age_seconds").is_empty());
    assert!(samples(&text, "jobwarden_jobs").is_empty());
}

#[test]
fn policy_states_that_drop_out_are_set_back_to_zero() {
    let metrics = Metrics::new();
    metrics.set_policies(&[("ready", 3), ("error", 1), ("paused_by_operator", 2)]);
    metrics.set_policies(&[("ready", 4)]);
    let text = metrics.render();
    let state = |s| value(&text, "jobwarden_policies", &[("state", s)]);
    assert_eq!(state("ready"), Some(4.0));
    assert_eq!(state("error"), Some(0.0));
    assert_eq!(state("invalid"), Some(0.0));
    assert_eq!(state("paused_by_operator"), Some(0.0));
}

#[test]
fn job_events_are_recorded_once_each() {
    let metrics = Metrics::new();
    metrics.record_job_events(
        "p",
        "deploy",
        &JobEvents {
            queued_seconds: Some(3.0),
            failure_reason: Some("runner_system_failure"),
        },
    );
    metrics.record_job_events("p", "deploy", &JobEvents::default());
    let text = metrics.render();
    assert_eq!(
        value(
            &text,
            "jobwarden_job_queued_duration_seconds_count",
            &[("project", "p"), ("stage", "deploy")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "jobwarden_job_failures_total",
            &[("failure_reason", "runner_system_failure")]
        ),
        Some(1.0)
    );
}

#[test]
fn request_durations_land_in_their_bucket() {
    let metrics = Metrics::new();
    metrics.on_request("/projects/:id/jobs", Some(502), Duration::from_millis(300));
    let text = metrics.render();
    let bucket = |le| {
        value(
            &text,
            "jobwarden_gitlab_request_duration_seconds_bucket",
            &[("endpoint", "/projects/:id/jobs"), ("le", le)],
        )
    };
    assert_eq!(bucket("0.25"), Some(0.0));
    assert_eq!(bucket("0.5"), Some(1.0));
    assert_eq!(
        value(&text, "jobwarden_gitlab_requests_total", &[("code", "502")]),
        Some(1.0)
    );
}

#[test]
fn the_gitlab_host_label_never_carries_a_url_or_credentials() {
    assert_eq!(
        gitlab_host("https://gitlab.example.com"),
        "gitlab.example.com"
    );
    assert_eq!(
        gitlab_host("https://user:s3cret@gitlab.example.com:8443/gitlab/api/v4?private_token=x"),
        "gitlab.example.com:8443"
    );
    assert_eq!(gitlab_host("http://127.0.0.1:3000/"), "127.0.0.1:3000");
    assert_eq!(gitlab_host("gitlab.example.com"), "gitlab.example.com");
    assert_eq!(
        gitlab_host("gitlab.example.com:8443"),
        "gitlab.example.com:8443"
    );
    assert_eq!(gitlab_host(""), "other");

    let metrics = Metrics::new();
    metrics.on_rate_limit_remaining("https://user:s3cret@gitlab.example.com/x", u64::MAX);
    let text = metrics.render();
    assert!(!text.contains("s3cret"));
    assert_eq!(
        value(
            &text,
            "jobwarden_gitlab_ratelimit_remaining",
            &[("gitlab_host", "gitlab.example.com")]
        ),
        Some(i64::MAX as f64)
    );
}

#[test]
fn bounded_tokens() {
    assert_eq!(bounded_token("script_failure"), "script_failure");
    assert_eq!(bounded_token("GitLabUnauthorized"), "GitLabUnauthorized");
    assert_eq!(bounded_token("a-b"), OTHER);
    assert_eq!(bounded_token(""), OTHER);
    assert_eq!(bounded_token(&"a".repeat(64)), "a".repeat(64));
    assert_eq!(bounded_token(&"a".repeat(65)), OTHER);
}

#[test]
fn metrics_is_a_shareable_request_observer() {
    fn assert_observer<T: RequestObserver>() {}
    assert_observer::<Metrics>();
    let shared: std::sync::Arc<dyn RequestObserver> = std::sync::Arc::new(Metrics::new());
    shared.on_request("/projects/:id/jobs", Some(401), Duration::ZERO);
}

#[test]
fn a_fleet_is_rendered_in_pieces_that_make_each_family_whole() {
    let metrics = Metrics::new();
    // More projects than one piece holds, with a project between pieces that has no pending
    // age: every family still has one header and every series once, sorted by project.
    let projects: Vec<String> = (0..300).map(|i| format!("group/p{i:03}")).collect();
    for (i, project) in projects.iter().enumerate() {
        metrics.set_jobs_by_status(project, &[("pending", 1)]);
        metrics.observe_job_queued(project, "test", 3.0);
        if i % 7 != 0 {
            metrics.set_pending_age(project, Some(1.0));
        }
    }
    let mut at = Exposition::default();
    let mut pieces = Vec::new();
    while let Some(piece) = metrics.render_next(&mut at) {
        pieces.push(piece);
    }
    assert!(pieces.len() > 4, "{} pieces", pieces.len());
    let text = pieces.concat();
    for (metric, kind) in [
        ("jobwarden_jobs", "gauge"),
        ("jobwarden_job_pending_age_seconds", "gauge"),
        ("jobwarden_job_queued_duration_seconds", "histogram"),
    ] {
        assert!(has_header(&text, metric, kind), "{metric}");
        let headers = text
            .lines()
            .filter(|l| l.starts_with('#') && l.split(' ').nth(2) == Some(metric))
            .count();
        assert_eq!(headers, 2, "{metric}: one HELP and one TYPE line");
    }
    let jobs = samples(&text, "jobwarden_jobs");
    assert_eq!(jobs.len(), 300);
    let mut sorted = jobs.clone();
    sorted.sort_unstable();
    assert_eq!(jobs, sorted, "sorted by project across pieces");
    assert_eq!(
        samples(&text, "jobwarden_job_pending_age_seconds").len(),
        300 - 43
    );
    assert_eq!(
        samples(&text, "jobwarden_job_queued_duration_seconds_count").len(),
        300
    );
    // Each family's lines are together: no header after a family's first sample comes back.
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    let mut unique = families.clone();
    unique.dedup();
    assert_eq!(families, unique);
}
