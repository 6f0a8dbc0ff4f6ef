//! Consistency checks of the deployment and monitoring files under `deploy/` against each other
//! and against the metrics the code exports. (promtool, kustomize and a live Prometheus check
//! the same files from `deploy/check.sh`.)

use jobwarden::gitlab::telemetry::RequestObserver;
use jobwarden::metrics::Metrics;
use regex::Regex;
use serde::Deserialize as _;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn deploy_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(relative)
}

fn read(relative: &str) -> String {
    let path = deploy_file(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn yaml(relative: &str) -> Value {
    serde_yaml::from_str(&read(relative)).unwrap_or_else(|err| panic!("{relative}: {err}"))
}

/// Every document of a multi-document YAML file.
fn yaml_documents(relative: &str) -> Vec<Value> {
    let text = read(relative);
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap_or_else(|e| panic!("{relative}: {e}")))
        .filter(|value| !value.is_null())
        .collect()
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    let mut current = value;
    for key in path {
        current = match key.parse::<usize>() {
            Ok(index) => &current[index],
            Err(_) => &current[*key],
        };
    }
    current
        .as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string in {value:?}"))
}

/// The alerting rules of rules.yaml, by alert name.
fn alerts() -> BTreeMap<String, Value> {
    let rules = yaml("monitoring/rules.yaml");
    let mut alerts = BTreeMap::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = str_at(rule, &["alert"]).to_owned();
            assert!(
                alerts.insert(name.clone(), rule.clone()).is_none(),
                "alert {name} defined twice"
            );
        }
    }
    alerts
}

/// Every PromQL expression of the dashboard and of the rules.
fn expressions() -> Vec<(String, String)> {
    let mut all = Vec::new();
    for (name, rule) in alerts() {
        all.push((format!("rule {name}"), str_at(&rule, &["expr"]).to_owned()));
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("monitoring/grafana-dashboard.json")).expect("dashboard JSON");
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            let expr = target["expr"].as_str().expect("every target has an expr");
            all.push((format!("panel {title:?}"), expr.to_owned()));
        }
    }
    all
}

/// The exposition text after recording one value of every metric.
fn rendered_metrics() -> String {
    let metrics = Metrics::new();
    metrics.observe_job_queued("p", "test", 1.0);
    metrics.count_job_failure("p", "test", "script_failure");
    metrics.set_jobs_by_status("p", &[("pending", 1)]);
    metrics.set_pending_age("p", Some(1.0));
    metrics.count_action("ns", "policy", "rule", "retry", "succeeded");
    metrics.on_request("/projects/:id/jobs", Some(200), Duration::from_millis(1));
    metrics.on_rate_limit_remaining("https://gitlab.example.com", 100);
    metrics.observe_reconcile("ns", "policy", 0.1);
    metrics.count_reconcile_error("ns", "policy", "api_error");
    metrics.set_policies(&[("ready", 1)]);
    metrics.render()
}

/// Label names of each sample name in the exposition text.
fn exported_labels(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let sample = Regex::new(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ").expect("regex");
    let label = Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)=""#).expect("regex");
    let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        if let Some(captures) = sample.captures(line) {
            let labels = names.entry(captures[1].to_owned()).or_default();
            if let Some(pairs) = captures.get(2) {
                labels.extend(label.captures_iter(pairs.as_str()).map(|c| c[1].to_owned()));
            }
        }
    }
    names
}

#[test]
fn prometheus_rule_carries_exactly_the_plain_rules() {
    let plain = yaml("monitoring/rules.yaml");
    let operator = yaml("monitoring/prometheusrule.yaml");
    assert_eq!(str_at(&operator, &["kind"]), "PrometheusRule");
    assert_eq!(
        operator["spec"], plain,
        "deploy/monitoring/prometheusrule.yaml spec differs from deploy/monitoring/rules.yaml"
    );
}

#[test]
fn every_alert_has_severity_summary_description_and_runbook() {
    let expected: BTreeSet<&str> = [
        "JobwardenDown",
        "GitLabUnreachable",
        "GitLabUnauthorized",
        "ReconcileErrors",
        "RetryStorm",
        "JobsWaitingForRunnerTooLong",
        "RateLimitNearlyExhausted",
    ]
    .into();
    let alerts = alerts();
    assert_eq!(
        alerts.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        expected
    );
    for (name, rule) in &alerts {
        let severity = str_at(rule, &["labels", "severity"]);
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: severity {severity}"
        );
        for annotation in ["summary", "description", "runbook"] {
            assert!(
                !str_at(rule, &["annotations", annotation]).trim().is_empty(),
                "{name}: empty {annotation}"
            );
        }
        assert!(rule["for"].as_str().is_some(), "{name}: no `for`");
    }
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_promtool_case() {
    let tests = yaml("monitoring/rules_test.yaml");
    assert_eq!(
        tests["rule_files"][0].as_str(),
        Some("rules.yaml"),
        "rules_test.yaml must test rules.yaml"
    );
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in tests["tests"].as_sequence().expect("tests") {
        for check in case["alert_rule_test"].as_sequence().into_iter().flatten() {
            let alert = str_at(check, &["alertname"]).to_owned();
            let expected = check["exp_alerts"].as_sequence().map_or(0, Vec::len);
            if expected == 0 {
                quiet.insert(alert);
            } else {
                firing.insert(alert);
            }
        }
    }
    for alert in alerts().keys() {
        assert!(firing.contains(alert), "no firing case for {alert}");
        assert!(quiet.contains(alert), "no quiet case for {alert}");
    }
}

#[test]
fn queries_use_only_exported_metrics_and_labels() {
    let exported = exported_labels(&rendered_metrics());
    // Labels Prometheus adds to every scraped series.
    let target_labels = ["job", "instance"];
    let selector = Regex::new(r"\b(jobwarden_[a-z_]+)\s*(?:\{([^}]*)\})?").expect("regex");
    let matcher = Regex::new(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)").expect("regex");
    let mut checked = 0;
    for (where_, expr) in expressions() {
        for captures in selector.captures_iter(&expr) {
            let name = &captures[1];
            let labels = exported
                .get(name)
                .unwrap_or_else(|| panic!("{where_}: {name} is not exported by Metrics"));
            if let Some(matchers) = captures.get(2) {
                for m in matcher.captures_iter(matchers.as_str()) {
                    let label = &m[1];
                    assert!(
                        labels.contains(label) || target_labels.contains(&label),
                        "{where_}: {name} has no label {label}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} selectors found");
}

#[test]
fn dashboard_panels_use_the_datasource_variable() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("monitoring/grafana-dashboard.json")).expect("dashboard JSON");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource")
    );
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate panel id"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{}",
            panel["title"]
        );
        for target in panel["targets"].as_array().expect("targets") {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}");
        }
    }
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for wanted in [
        "Queue time (time waiting for a runner)",
        "Queue time p50 / p95 / p99",
        "Job failures by reason (per hour)",
        "Actions by policy, action and outcome (per hour)",
        "Requests by status code",
        "API budget (RateLimit-Remaining)",
        "Reconcile duration p95 by policy",
        "Reconcile errors",
        "Oldest job waiting for a runner",
    ] {
        assert!(titles.contains(&wanted), "no panel {wanted:?}");
    }
}

#[test]
fn deployment_service_and_service_monitor_agree() {
    let deployment = yaml("core/deployment.yaml");
    let service = yaml("core/service.yaml");
    let monitor = yaml("monitoring/servicemonitor.yaml");

    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        args,
        [
            "run",
            "--metrics-listen",
            "0.0.0.0:9090",
            "--state-dir",
            "/var/lib/jobwarden"
        ]
    );
    // The state directory is a writable volume (the root filesystem is read-only).
    assert_eq!(
        str_at(container, &["volumeMounts", "0", "mountPath"]),
        "/var/lib/jobwarden"
    );
    let volume = str_at(container, &["volumeMounts", "0", "name"]);
    assert!(
        pod["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .any(|v| v["name"].as_str() == Some(volume) && v["emptyDir"].is_mapping()),
        "the state volume is an emptyDir"
    );
    assert_eq!(str_at(container, &["ports", "0", "name"]), "metrics");
    assert_eq!(container["ports"][0]["containerPort"].as_u64(), Some(9090));
    assert_eq!(
        str_at(container, &["livenessProbe", "httpGet", "path"]),
        "/healthz"
    );
    assert_eq!(
        str_at(container, &["readinessProbe", "httpGet", "path"]),
        "/readyz"
    );
    let env_names: Vec<&str> = container["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(
        !env_names.contains(&"GITLAB_TOKEN"),
        "no token in the controller's env"
    );

    // Hardening.
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        str_at(pod, &["securityContext", "seccompProfile", "type"]),
        "RuntimeDefault"
    );
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(security["capabilities"]["drop"][0].as_str(), Some("ALL"));
    for kind in ["requests", "limits"] {
        assert!(container["resources"][kind]["memory"].as_str().is_some());
    }

    // The Service exposes the container port, the ServiceMonitor scrapes the Service.
    assert_eq!(str_at(&service, &["spec", "ports", "0", "name"]), "metrics");
    assert_eq!(
        str_at(&service, &["spec", "ports", "0", "targetPort"]),
        "metrics"
    );
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let selected = monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("matchLabels");
    for (key, value) in selected {
        assert_eq!(
            &service["metadata"]["labels"][key.as_str().expect("label key")],
            value,
            "the ServiceMonitor does not select the Service"
        );
    }
    assert_eq!(
        str_at(&monitor, &["spec", "endpoints", "0", "port"]),
        "metrics"
    );
    assert_eq!(
        monitor["spec"]["endpoints"][0]["honorLabels"].as_bool(),
        Some(true)
    );
    // The alerts expect the job label to be the Service's name.
    assert_eq!(str_at(&service, &["metadata", "name"]), "jobwarden");
}

#[test]
fn rbac_is_least_privilege() {
    let documents = yaml_documents("core/rbac.yaml");
    let mut verbs_by_resource: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for document in &documents {
        let kind = str_at(document, &["kind"]);
        if kind != "ClusterRole" && kind != "Role" {
            continue;
        }
        for rule in document["rules"].as_sequence().expect("rules") {
            for resource in rule["resources"].as_sequence().expect("resources") {
                let key = format!("{kind}/{}", resource.as_str().expect("resource"));
                let verbs = verbs_by_resource.entry(key).or_default();
                verbs.extend(
                    rule["verbs"]
                        .as_sequence()
                        .expect("verbs")
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned),
                );
            }
        }
    }
    let verbs = |key: &str| -> Vec<&str> {
        verbs_by_resource
            .get(key)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    };
    assert_eq!(verbs("ClusterRole/jobpolicies"), ["get", "list", "watch"]);
    assert_eq!(verbs("ClusterRole/jobpolicies/status"), ["patch"]);
    assert_eq!(verbs("ClusterRole/events"), ["create", "patch"]);
    // Secrets can be read by name, never listed or watched.
    assert_eq!(verbs("ClusterRole/secrets"), ["get"]);
    // Leases only in jobwarden's own namespace.
    assert!(verbs("ClusterRole/leases").is_empty());
    assert_eq!(verbs("Role/leases"), ["create", "get", "update"]);
    assert!(
        !verbs_by_resource.keys().any(|k| k.ends_with("/*")),
        "no wildcard resources"
    );
    assert!(
        verbs_by_resource.values().all(|v| !v.contains("*")),
        "no wildcard verbs"
    );
}

/// The values a JSON patch (a list of operations) adds or replaces at `path`.
fn patch_values<'a>(patch: &'a Value, path: &str) -> Vec<&'a Value> {
    patch
        .as_sequence()
        .expect("a JSON patch")
        .iter()
        .filter(|op| op["path"].as_str() == Some(path))
        .map(|op| &op["value"])
        .collect()
}

/// `jobwarden run` with the arguments a patch appends to the container's: they must parse.
fn run_with_patched_args(patch: &Value) -> jobwarden::commands::run::RunArgs {
    use clap::Parser;
    let args: Vec<String> = patch_values(patch, "/spec/template/spec/containers/0/args/-")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let cli = jobwarden::cli::Cli::try_parse_from(
        ["jobwarden", "run"]
            .into_iter()
            .map(str::to_owned)
            .chain(args.iter().cloned()),
    )
    .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let jobwarden::cli::Command::Run(run) = cli.command else {
        panic!("not run")
    };
    run
}

#[test]
fn the_webhook_overlay_wires_flags_secret_port_and_peer_names_that_agree() {
    let patch = yaml("components/webhook/controller-patch.yaml");
    let added = |path: &str| patch_values(&patch, path);
    // The flags exist and parse (the token comes from the environment, not a flag).
    let run = run_with_patched_args(&patch);
    let listen = run.webhook_listen.expect("--webhook-listen");
    let template = run.webhook_forward_to.expect("--webhook-forward-to");
    let env = added("/spec/template/spec/containers/0/env/-");
    assert_eq!(
        env[0]["name"].as_str(),
        Some(run.webhook_token_env.as_str())
    );
    assert_eq!(
        str_at(env[0], &["valueFrom", "secretKeyRef", "name"]),
        "jobwarden-webhook"
    );
    let port = added("/spec/template/spec/containers/0/ports/-")[0];
    assert_eq!(
        port["containerPort"].as_u64(),
        Some(u64::from(listen.port()))
    );
    let subdomain = added("/spec/template/spec/subdomain")[0]
        .as_str()
        .expect("subdomain");
    let services = yaml_documents("components/webhook/service.yaml");
    let peers = services
        .iter()
        .find(|s| s["spec"]["clusterIP"].as_str() == Some("None"))
        .expect("a headless Service");
    assert_eq!(str_at(peers, &["metadata", "name"]), subdomain);
    assert!(
        template.starts_with(&format!(
            "http://{{identity}}.{subdomain}.jobwarden-system.svc:{}/",
            listen.port()
        )),
        "{template}"
    );
    let ingress = yaml("components/webhook/ingress.yaml");
    let backend = &ingress["spec"]["rules"][0]["http"]["paths"][0];
    assert_eq!(backend["path"].as_str(), Some("/webhook"));
    let webhook_service = services
        .iter()
        .find(|s| s["spec"]["clusterIP"].as_str() != Some("None"))
        .expect("the webhook Service");
    assert_eq!(
        str_at(backend, &["backend", "service", "name"]),
        str_at(webhook_service, &["metadata", "name"])
    );
}

#[test]
fn the_sharded_overlay_runs_one_shard_per_pod_ordinal_of_a_statefulset() {
    let patch = yaml("sharded/statefulset-patch.yaml");
    let value_at = |path: &str| patch_values(&patch, path);
    assert_eq!(value_at("/kind")[0].as_str(), Some("StatefulSet"));
    let run = run_with_patched_args(&patch);
    let replicas = value_at("/spec/replicas")[0].as_u64().expect("replicas");
    assert_eq!(
        u64::from(run.cluster.shard_count),
        replicas,
        "one Pod per shard"
    );
    // The index comes from the Pod's ordinal label, through the variable --shard-index reads.
    let env = value_at("/spec/template/spec/containers/0/env/-");
    let index = env
        .iter()
        .find(|e| e["name"].as_str() == Some("JOBWARDEN_SHARD_INDEX"))
        .expect("JOBWARDEN_SHARD_INDEX");
    assert_eq!(
        str_at(index, &["valueFrom", "fieldRef", "fieldPath"]),
        "metadata.labels['apps.kubernetes.io/pod-index']"
    );
    let command = <jobwarden::cli::Cli as clap::CommandFactory>::command();
    let shard_index_env = command
        .find_subcommand("run")
        .and_then(|run| {
            run.get_arguments()
                .find(|a| a.get_long() == Some("shard-index"))
        })
        .and_then(|arg| arg.get_env())
        .and_then(|env| env.to_str());
    assert_eq!(shard_index_env, Some("JOBWARDEN_SHARD_INDEX"));
    // The StatefulSet's governing Service is the overlay's headless one.
    let service = yaml("sharded/service.yaml");
    assert_eq!(
        value_at("/spec/serviceName")[0].as_str(),
        Some(str_at(&service, &["metadata", "name"]))
    );
    assert_eq!(service["spec"]["clusterIP"].as_str(), Some("None"));
}

/// Sharding and webhooks together: the StatefulSet Pods take their DNS subdomain from the
/// governing Service, so the overlay makes that the webhook's headless peers Service, the one
/// the forward template names; and the webhook Component patches the workload whatever its kind.
#[test]
fn the_sharded_webhook_overlay_makes_every_shard_reachable_by_the_forward_template() {
    let component = yaml("components/webhook/kustomization.yaml");
    let target = &component["patches"][0]["target"];
    assert_eq!(target["group"].as_str(), Some("apps"));
    assert_eq!(target["name"].as_str(), Some("jobwarden"));
    assert!(
        target["kind"].is_null(),
        "the patch targets a Deployment or a StatefulSet"
    );

    let overlay = yaml("sharded-webhook/kustomization.yaml");
    let patch_text = overlay["patches"][0]["patch"]
        .as_str()
        .expect("an inline patch");
    let patch: Value = serde_yaml::from_str(patch_text).expect("a JSON patch");
    let service_name = patch_values(&patch, "/spec/serviceName")[0]
        .as_str()
        .expect("serviceName");
    let controller = yaml("components/webhook/controller-patch.yaml");
    let subdomain = patch_values(&controller, "/spec/template/spec/subdomain")[0]
        .as_str()
        .expect("subdomain");
    assert_eq!(service_name, subdomain);
    let template = run_with_patched_args(&controller)
        .webhook_forward_to
        .expect("--webhook-forward-to");
    assert!(
        template.starts_with(&format!("http://{{identity}}.{service_name}.")),
        "{template}"
    );
    let peers = yaml_documents("components/webhook/service.yaml")
        .into_iter()
        .find(|s| str_at(s, &["metadata", "name"]) == service_name)
        .expect("the governing Service is the webhook's peers Service");
    assert_eq!(peers["spec"]["clusterIP"].as_str(), Some("None"));
    assert_eq!(
        peers["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true)
    );
}
