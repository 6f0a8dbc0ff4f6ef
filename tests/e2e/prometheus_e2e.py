#!/usr/bin/env python3
"""End to end: a real Prometheus scrapes `jobwarden demo`, and PromQL answers what operators ask.

Starts `jobwarden demo` (the built-in GitLab simulator plus the example policies) with its
metrics on a loopback port, starts Debian's `prometheus` scraping it every second with a
temporary config and data directory, then checks through Prometheus' HTTP API:

- the p95 queue time, ``histogram_quantile(0.95, sum by (le) (rate(...[1m])))``, is a number;
- ``sum by (failure_reason) (jobwarden_job_failures_total)`` includes stuck_or_timeout_failure;
- ``jobwarden_actions_total{action="retry"}`` is above zero;
- ``promtool check metrics`` finds no problem in a scrape;
- every PromQL expression of the Grafana dashboard and of the alert rules parses
  (deploy/monitoring/check_dashboard_queries.py).

Every wait is bounded and every process is stopped at the end, whatever happens. With
``--keep-running SECONDS`` the processes stay up that long after the checks (for screenshots).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback only)
        return bytes(response.read())


def wait_for(what: str, check: Callable[[], Any], deadline_s: float, every_s: float = 0.5) -> Any:
    """Polls `check` until it returns something truthy, or fails after `deadline_s`."""
    deadline = time.monotonic() + deadline_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as err:  # noqa: BLE001 (reported if the wait fails)
            last_error = err
        time.sleep(every_s)
    raise SystemExit(f"timed out after {deadline_s:.0f}s waiting for {what} (last error: {last_error})")


class Prometheus:
    def __init__(self, base: str) -> None:
        self.base = base

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        answer = json.loads(http_get(url))
        if answer.get("status") != "success":
            raise RuntimeError(f"query failed: {promql}: {answer}")
        return list(answer["data"]["result"])


def scalar_values(result: list[dict[str, Any]]) -> list[float]:
    return [float(sample["value"][1]) for sample in result]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.environ.get("JOBWARDEN_BIN", str(ROOT / "target/debug/jobwarden")))
    parser.add_argument("--prometheus", default=shutil.which("prometheus") or "prometheus")
    parser.add_argument("--promtool", default=shutil.which("promtool") or "promtool")
    parser.add_argument("--timeout", type=float, default=120.0, help="bound of each wait, seconds")
    parser.add_argument("--speed", type=float, default=240.0, help="the demo's simulated clock speed")
    parser.add_argument("--keep-running", type=float, default=0.0, help="seconds to stay up after the checks")
    parser.add_argument("--print-urls", action="store_true", help="print the Prometheus URL when ready")
    args = parser.parse_args()

    if not Path(args.bin).exists():
        raise SystemExit(f"{args.bin} not found: run `cargo build` first")

    workdir = Path(tempfile.mkdtemp(prefix="jobwarden-prom-e2e-"))
    metrics_port, prom_port = free_port(), free_port()
    processes: list[subprocess.Popen[bytes]] = []
    failures: list[str] = []
    try:
        demo_log = open(workdir / "demo.log", "wb")
        demo = subprocess.Popen(
            [args.bin, "demo", "--for", f"{int(args.timeout * 3 + args.keep_running)}s",
             "--metrics-listen", f"127.0.0.1:{metrics_port}", "--speed", str(args.speed)],
            stdout=demo_log, stderr=subprocess.STDOUT, cwd=workdir,
        )
        processes.append(demo)
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        wait_for("jobwarden demo's /metrics", lambda: b"jobwarden_build_info" in http_get(metrics_url), args.timeout)

        template = (ROOT / "deploy/monitoring/prometheus-e2e.yml.tmpl").read_text()
        (workdir / "prometheus.yml").write_text(template.replace("__PORT__", str(metrics_port)))
        prom_log = open(workdir / "prometheus.log", "wb")
        prometheus = subprocess.Popen(
            [args.prometheus, f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=prom_log, stderr=subprocess.STDOUT, cwd=workdir,
        )
        processes.append(prometheus)
        prom = Prometheus(f"http://127.0.0.1:{prom_port}")
        wait_for("Prometheus to be ready", lambda: http_get(f"{prom.base}/-/ready"), args.timeout)
        if args.print_urls:
            print(f"prometheus: {prom.base}", flush=True)

        # Wait for the series operators look at, as the demo's fleet produces them.
        wait_for("the scrape target to be up", lambda: scalar_values(prom.query('up{job="jobwarden"}')) == [1.0], args.timeout)

        p95_query = "histogram_quantile(0.95, sum by (le) (rate(jobwarden_job_queued_duration_seconds_bucket[1m])))"

        def p95_is_a_number() -> bool:
            values = scalar_values(prom.query(p95_query))
            return len(values) == 1 and not math.isnan(values[0])

        def failures_by_reason() -> set[str]:
            result = prom.query("sum by (failure_reason) (jobwarden_job_failures_total)")
            return {s["metric"].get("failure_reason", "") for s in result}

        def retries() -> float:
            return sum(scalar_values(prom.query('sum(jobwarden_actions_total{action="retry"})')))

        checks: list[tuple[str, Callable[[], Any]]] = [
            (f"{p95_query} to be a number", p95_is_a_number),
            ("failures by reason to include stuck_or_timeout_failure",
             lambda: "stuck_or_timeout_failure" in failures_by_reason()),
            ('jobwarden_actions_total{action="retry"} to be above zero', lambda: retries() > 0),
        ]
        for what, check in checks:
            try:
                wait_for(what, check, args.timeout)
                print(f"ok: {what}")
            except SystemExit as err:
                failures.append(str(err))
        p95 = scalar_values(prom.query(p95_query))
        print(f"    p95 queue time over the last minute: {p95[0] if p95 else 'none'} s")
        print(f"    failure reasons seen: {sorted(failures_by_reason())}")
        print(f"    retries: {retries():.0f}")

        scrape = http_get(metrics_url)
        check = subprocess.run([args.promtool, "check", "metrics"], input=scrape, capture_output=True, timeout=60)
        problems = (check.stdout + check.stderr).decode().strip()
        if check.returncode != 0 or problems:
            failures.append(f"promtool check metrics: {problems or 'exit ' + str(check.returncode)}")
        else:
            print("ok: promtool check metrics reports no problem")

        queries = subprocess.run(
            [sys.executable, str(ROOT / "deploy/monitoring/check_dashboard_queries.py"), "--prometheus", prom.base],
            capture_output=True, timeout=120,
        )
        print(queries.stdout.decode().strip().splitlines()[-1] if queries.stdout else "")
        if queries.returncode != 0:
            failures.append("dashboard/rules queries: " + (queries.stdout + queries.stderr).decode()[-2000:])
        else:
            print("ok: every dashboard and rule query parses")

        if args.keep_running > 0:
            time.sleep(args.keep_running)
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if failures:
            for name in ("demo.log", "prometheus.log"):
                path = workdir / name
                if path.exists():
                    print(f"--- last lines of {name}:", file=sys.stderr)
                    print("\n".join(path.read_text(errors="replace").splitlines()[-30:]), file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)

    if failures:
        for failure in failures:
            print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    print("prometheus e2e: 5 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
