#!/usr/bin/env python3
"""The script an ops engineer would write instead of jobwarden: retry GitLab CI jobs that failed
as stuck or timed out, at most twice per job, with python-gitlab.

It is the baseline of the fleet benchmark (`cargo bench --bench fleet`), which runs it against
the GitLab simulator and reads its CPU time from /proc, but it is a plain script that works
against any GitLab:

    GITLAB_TOKEN=... python3 benches/baseline_cron.py --url https://gitlab.example.com \
        --projects 12 34 group/project --interval 30

What one pass does, for each project in turn:

1. List the project's failed jobs, newest first (`project.jobs.list(scope="failed",
   iterator=True)`, 100 per page), and stop paging at the first job created more than
   `--history-hours` (72, as jobwarden's default history) ago: older failures are not worth a
   retry, and reading every page of a busy project on every pass would be wasteful.
2. Keep the failures whose reason is `stuck_or_timeout_failure` or one of the granular reasons
   GitLab 19.1+ reports instead of it (the same set a jobwarden rule naming
   `stuck_or_timeout_failure` matches), the newest failed attempt per pipeline and job name,
   and with `--finished-within-minutes M` only those that finished at most M minutes ago (what
   a jobwarden rule with `finishedWithin: Mm` retries; 0, the default, keeps every one).
3. For each pipeline holding such a failure, list its jobs once with `include_retried=True`:
   the attempts of a job are the jobs of that name in the pipeline. A failure is retried when
   it is still the newest attempt (nobody retried it yet) and fewer than `--retry-limit` (2)
   retries were made, i.e. fewer than 3 attempts exist.

The script is stateless, like a cron job: every pass asks GitLab again, so a restart never
retries a job twice. It loops in one process (`--interval` seconds of sleep after each pass,
like jobwarden's policy loop) instead of being started by cron every time, which spares it the
interpreter start-up on each run; `--passes N` stops after N passes (0 = run until killed).

After each pass it prints one JSON line on stdout, e.g.
`{"pass": 1, "seconds": 2.41, "projects": 100, "candidates": 250, "retried": 240, "errors": 0}`
(the benchmark delimits runs with these lines); errors go to stderr and never stop a pass.
python-gitlab's defaults handle 429 answers (it waits and retries).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import gitlab
from gitlab.exceptions import GitlabError

# `stuck_or_timeout_failure` and what GitLab 19.1+ writes instead (jobwarden's aliases).
STUCK_REASONS = frozenset(
    {
        "stuck_or_timeout_failure",
        "stuck_pending_with_matching_runners",
        "stuck_pending_no_matching_runners",
        "no_updates_running",
        "no_updates_canceling",
    }
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--url", required=True, help="GitLab instance URL")
    parser.add_argument(
        "--token-env", default="GITLAB_TOKEN", help="variable holding the API token"
    )
    parser.add_argument(
        "--projects", nargs="*", default=[], help="project ids or full paths"
    )
    parser.add_argument(
        "--projects-file", help="file with one project id or path per line"
    )
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between passes")
    parser.add_argument("--passes", type=int, default=0, help="passes to run (0 = forever)")
    parser.add_argument("--retry-limit", type=int, default=2, help="retries beyond the first attempt")
    parser.add_argument("--history-hours", type=float, default=72.0, help="ignore older jobs")
    parser.add_argument(
        "--finished-within-minutes",
        type=float,
        default=0.0,
        help="retry only failures that finished at most this long ago (0 = any)",
    )
    args = parser.parse_args(argv)
    if args.projects_file:
        with open(args.projects_file, encoding="utf-8") as handle:
            args.projects += [line.strip() for line in handle if line.strip()]
    if not args.projects:
        parser.error("no projects: use --projects or --projects-file")
    return args


def timestamp(raw: str) -> datetime:
    return datetime.fromisoformat(raw.replace("Z", "+00:00"))


def created_at(job) -> datetime:
    return timestamp(job.created_at)


def finished_since(job, finished_cutoff: datetime | None) -> bool:
    """True when there is no window, or the job finished inside it."""
    if finished_cutoff is None:
        return True
    return job.finished_at is not None and timestamp(job.finished_at) >= finished_cutoff


def recent_stuck_failures(project, cutoff: datetime, finished_cutoff: datetime | None) -> list:
    """The newest failed attempt per (pipeline, name) among recent stuck/timed-out failures,
    those that finished before `finished_cutoff` (when given) left out."""
    newest: dict[tuple[int, str], object] = {}
    for job in project.jobs.list(scope="failed", iterator=True, per_page=100):
        if created_at(job) < cutoff:
            break  # newest first: everything after this is older still
        if job.failure_reason not in STUCK_REASONS:
            continue
        key = (job.pipeline["id"], job.name)
        if key not in newest or job.id > newest[key].id:
            newest[key] = job
    return [job for job in newest.values() if finished_since(job, finished_cutoff)]


def attempts_by_name(project, pipeline_id: int) -> dict[str, tuple[int, int]]:
    """Per job name in the pipeline: (attempts, id of the newest attempt)."""
    pipeline = project.pipelines.get(pipeline_id, lazy=True)
    attempts: dict[str, tuple[int, int]] = {}
    for job in pipeline.jobs.list(include_retried=True, iterator=True, per_page=100):
        count, newest = attempts.get(job.name, (0, 0))
        attempts[job.name] = (count + 1, max(newest, job.id))
    return attempts


def retry_project(
    gl: gitlab.Gitlab,
    project_ref: str,
    cutoff: datetime,
    finished_cutoff: datetime | None,
    limit: int,
) -> tuple[int, int, int]:
    """One project: returns (candidates, retried, failed retries)."""
    project = gl.projects.get(project_ref, lazy=True)
    failures = recent_stuck_failures(project, cutoff, finished_cutoff)
    by_pipeline: dict[int, list] = defaultdict(list)
    for job in failures:
        by_pipeline[job.pipeline["id"]].append(job)
    retried = errors = 0
    for pipeline_id, jobs in by_pipeline.items():
        attempts = attempts_by_name(project, pipeline_id)
        for job in jobs:
            count, newest = attempts.get(job.name, (1, job.id))
            if newest != job.id or count - 1 >= limit:
                continue
            try:
                job.retry()
                retried += 1
            except GitlabError as err:  # e.g. archived or no longer retryable
                errors += 1
                print(f"project {project_ref}: retry of job {job.id}: {err}", file=sys.stderr)
    return len(failures), retried, errors


def one_pass(gl: gitlab.Gitlab, args: argparse.Namespace, number: int) -> dict:
    started = time.monotonic()
    now = datetime.now(timezone.utc)
    cutoff = now - timedelta(hours=args.history_hours)
    finished_cutoff = (
        now - timedelta(minutes=args.finished_within_minutes)
        if args.finished_within_minutes > 0
        else None
    )
    candidates = retried = errors = 0
    for project_ref in args.projects:
        try:
            found, done, failed = retry_project(
                gl, project_ref, cutoff, finished_cutoff, args.retry_limit
            )
        except GitlabError as err:
            errors += 1
            print(f"project {project_ref}: {err}", file=sys.stderr)
            continue
        candidates += found
        retried += done
        errors += failed
    return {
        "pass": number,
        "seconds": round(time.monotonic() - started, 3),
        "projects": len(args.projects),
        "candidates": candidates,
        "retried": retried,
        "errors": errors,
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    token = os.environ.get(args.token_env)
    if not token:
        print(f"${args.token_env} is not set", file=sys.stderr)
        return 2
    gl = gitlab.Gitlab(args.url, private_token=token, timeout=30)
    number = 0
    while args.passes == 0 or number < args.passes:
        number += 1
        print(json.dumps(one_pass(gl, args, number)), flush=True)
        if args.passes == 0 or number < args.passes:
            time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
