//! `jobwarden plan --policies DIR`: one dry pass, showing what would be done to which job and
//! why.

use super::{GitLabArgs, PolicyFilesArgs};
use crate::engine::{
    ActionRecord, Engine, GitLabAccess, Outcome, RunMode, RunReport, system_clock,
};
use crate::metrics::Metrics;
use crate::source::files::{
    LoadedPolicy, LoadedSecret, load_manifests, resolve_ca_bundle, resolve_token,
};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
#[command(mut_arg("policies", |arg| arg.required(true)))]
pub struct PlanArgs {
    #[command(flatten)]
    pub files: PolicyFilesArgs,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = PlanFormat::Text)]
    pub output: PlanFormat,
    #[command(flatten)]
    pub gitlab: GitLabArgs,
}

/// One planned action, as machines read it (`--output json`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedAction {
    pub policy: String,
    pub project: String,
    pub job_id: u64,
    pub job_name: String,
    pub rule: String,
    pub action: &'static str,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    pub reason: String,
}

impl PlannedAction {
    fn new(report: &RunReport, record: &ActionRecord) -> Self {
        PlannedAction {
            policy: report.policy.to_string(),
            project: record.project.to_string(),
            job_id: record.job_id,
            job_name: record.job_name.clone(),
            rule: record.rule.clone(),
            action: record.action.as_str(),
            outcome: record.outcome.label(),
            not_before: match &record.outcome {
                Outcome::Deferred { not_before } => Some(not_before.to_string()),
                _ => None,
            },
            reason: record.reason.clone(),
        }
    }
}

pub async fn run(args: PlanArgs) -> crate::Result<ExitCode> {
    let manifests = load_manifests(&args.files.policies);
    let mut failed = !manifests.errors.is_empty();
    for error in &manifests.errors {
        eprintln!("error: {error}");
    }
    let engine = Engine::new(
        args.gitlab.engine_config(),
        system_clock(),
        Arc::new(Metrics::new()),
    );
    let never = CancellationToken::new();
    let mut planned = Vec::new();
    let mut texts = Vec::new();
    for loaded in &manifests.policies {
        let policy = match &loaded.compiled {
            Ok(p) => p,
            Err(errors) => {
                failed = true;
                eprintln!(
                    "error: {}: {}: invalid policy:\n{errors}",
                    loaded.source,
                    loaded.key()
                );
                continue;
            }
        };
        let access = match access_of(loaded, &manifests.secrets, &args.files.token_env) {
            Ok(access) => access,
            Err(err) => {
                failed = true;
                eprintln!("error: {}: {err}", policy.key);
                continue;
            }
        };
        match engine
            .reconcile(policy, &access, RunMode::ForceDryRun, &never)
            .await
        {
            Ok(report) => {
                for f in &report.failures {
                    eprintln!("warning: {}: {}: {}", policy.key, f.target, f.message);
                }
                planned.extend(
                    report
                        .actions
                        .iter()
                        .map(|r| PlannedAction::new(&report, r)),
                );
                texts.push(render_text(&report));
            }
            Err(err) => {
                failed = true;
                eprintln!("error: {}: {err}", policy.key);
            }
        }
    }
    match args.output {
        PlanFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&planned)
                .map_err(|e| crate::Error::InvalidArgument(e.to_string()))?
        ),
        PlanFormat::Text => {
            for text in texts {
                println!("{text}");
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A policy's token (its Secret, else the environment variable `token_env`) and CA bundle,
/// from the loaded manifests; else why not.
fn access_of(
    loaded: &LoadedPolicy,
    secrets: &[LoadedSecret],
    token_env: &str,
) -> Result<GitLabAccess, String> {
    let token = resolve_token(&loaded.policy, secrets, token_env).map_err(|e| e.to_string())?;
    let ca_bundle = resolve_ca_bundle(&loaded.policy, secrets).map_err(|e| e.to_string())?;
    Ok(GitLabAccess::new(token).with_ca_bundle(ca_bundle))
}

/// The human plan of one policy: a table of jobs, rules, actions and reasons.
pub fn render_text(report: &RunReport) -> String {
    let mut out = format!(
        "Policy {} — {} project(s), {} job(s) tracked{}\n",
        report.policy,
        report.projects,
        report.jobs_seen,
        if report.suspended { " (suspended)" } else { "" }
    );
    if report.actions.is_empty() {
        out.push_str("  No changes: nothing matches a rule.\n");
        return out;
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec![
        "project", "job", "name", "rule", "action", "when", "why",
    ]);
    for r in &report.actions {
        let when = match &r.outcome {
            Outcome::Deferred { not_before } => {
                format!("after {}", not_before.strftime("%Y-%m-%d %H:%M:%SZ"))
            }
            Outcome::SkippedOverBudget => "over budget".to_owned(),
            _ => "now".to_owned(),
        };
        table.add_row(vec![
            r.project.to_string(),
            r.job_id.to_string(),
            r.job_name.clone(),
            r.rule.clone(),
            r.action.as_str().to_owned(),
            when,
            r.reason.clone(),
        ]);
    }
    out.push_str(&table.to_string());
    let now = report
        .actions
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::DryRun))
        .count();
    out.push_str(&format!(
        "\nPlan: {now} action(s) now, {} later, {} over budget.\n",
        report.deferred_total(),
        report.over_budget_total(),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Tally;
    use crate::policy::PolicyKey;

    #[test]
    fn the_plan_of_a_policy_shows_how_many_projects_it_covers() {
        let report = RunReport {
            policy: PolicyKey::new("ci", "fleet"),
            time: jiff::Timestamp::UNIX_EPOCH,
            dry_run: true,
            suspended: false,
            projects: 1234,
            jobs_seen: 56,
            actions: Vec::new(),
            unlisted: Tally::default(),
            failures: Vec::new(),
            deliveries_only: false,
        };
        assert!(
            render_text(&report)
                .starts_with("Policy ci/fleet — 1234 project(s), 56 job(s) tracked\n"),
            "{}",
            render_text(&report)
        );
    }
}
