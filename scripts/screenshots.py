#!/usr/bin/env python3
"""Regenerates the README's pictures: Prometheus graphs of a live `jobwarden demo`.

Runs tests/e2e/prometheus_e2e.py (the demo scraped by a real Prometheus on loopback), and while
it stays up, opens Prometheus' graph page in headless Chromium for the p95 queue time and for
failures by reason, saving PNGs under docs/screenshots/.

Needs: `cargo build`, Debian's `prometheus` and `chromium` packages
(`apt-get install -y --no-install-recommends prometheus chromium`). Run by hand, not in CI:

    python3 scripts/screenshots.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"

GRAPHS = {
    "queue-time-p95.png": "histogram_quantile(0.95, sum by (le) (rate(jobwarden_job_queued_duration_seconds_bucket[1m])))",
    "failures-by-reason.png": "sum by (failure_reason) (jobwarden_job_failures_total)",
}


def graph_url(base: str, expr: str) -> str:
    query = urllib.parse.urlencode(
        {"g0.expr": expr, "g0.tab": "0", "g0.range_input": "5m", "g0.show_exemplars": "0"}
    )
    return f"{base}/graph?{query}"


def screenshot(chromium: str, url: str, target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="jobwarden-chromium-") as profile:
        subprocess.run(
            [
                chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--no-first-run", "--disable-component-update", "--disable-sync", "--disable-quic",
                f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1400,900",
                "--virtual-time-budget=8000", f"--screenshot={target}", url,
            ],
            check=True, timeout=120, capture_output=True,
        )


def main() -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("chromium not found: apt-get install -y --no-install-recommends chromium")
    OUT.mkdir(parents=True, exist_ok=True)
    e2e = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/e2e/prometheus_e2e.py"), "--keep-running", "90", "--print-urls"],
        stdout=subprocess.PIPE, text=True,
    )
    base = None
    assert e2e.stdout is not None
    try:
        deadline = time.monotonic() + 400
        for line in e2e.stdout:
            print(line, end="")
            if line.startswith("prometheus: "):
                base = line.split(" ", 1)[1].strip()
            if "every dashboard and rule query parses" in line or time.monotonic() > deadline:
                break
        if base is None:
            raise SystemExit("the e2e run did not start Prometheus")
        time.sleep(20)  # a little more history on the graphs
        for name, expr in GRAPHS.items():
            screenshot(chromium, graph_url(base, expr), OUT / name)
            print(f"saved {OUT / name}")
    finally:
        e2e.terminate()
        try:
            e2e.wait(timeout=60)
        except subprocess.TimeoutExpired:
            e2e.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
