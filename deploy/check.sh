#!/usr/bin/env bash
# Checks the deployment and monitoring files under deploy/:
#   1. every kustomization builds (kubectl kustomize);
#   2. the alerting rules are valid and their unit tests pass (promtool check/test rules);
#   3. the e2e Prometheus configuration template is valid (promtool check config);
#   4. every PromQL expression of the Grafana dashboard and of the rules parses, on a throwaway
#      Prometheus listening on loopback (check_dashboard_queries.py).
# Needs kubectl, promtool and prometheus (Debian: apt-get install -y --no-install-recommends
# prometheus), python3 with PyYAML (Debian: python3-yaml).
# The consistency of these files with each other and with the code is checked by
# `cargo test --test deploy_monitoring`.
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "deploy/check.sh: $1 not found; $2" >&2
    exit 2
  fi
}
need promtool "apt-get install -y --no-install-recommends prometheus"
need prometheus "apt-get install -y --no-install-recommends prometheus"
need python3 "install Python 3"

echo "== kustomize"
if command -v kubectl >/dev/null 2>&1; then
  for dir in deploy deploy/core deploy/monitoring deploy/webhook deploy/sharded deploy/sharded-webhook; do
    kubectl kustomize "$dir" >/dev/null
    echo "$dir: builds"
  done
else
  echo "kubectl not found: kustomize builds skipped (the manifests are still validated one by one)"
fi

echo "== promtool"
promtool check rules deploy/monitoring/rules.yaml
promtool test rules deploy/monitoring/rules_test.yaml

tmp="$(mktemp -d)"
prometheus_pid=""
cleanup() {
  if [[ -n "$prometheus_pid" ]]; then
    kill "$prometheus_pid" 2>/dev/null || true
    wait "$prometheus_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

sed "s/__PORT__/$(free_port)/" deploy/monitoring/prometheus-e2e.yml.tmpl >"$tmp/e2e.yml"
promtool check config "$tmp/e2e.yml"

echo "== PromQL of the dashboard and the rules"
port="$(free_port)"
printf 'global:\n  scrape_interval: 1m\n' >"$tmp/prometheus.yml"
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
  --web.listen-address="127.0.0.1:$port" >"$tmp/prometheus.log" 2>&1 &
prometheus_pid=$!

ready=""
for _ in $(seq 1 100); do
  if python3 -c "import urllib.request, sys; urllib.request.urlopen('http://127.0.0.1:$port/-/ready', timeout=1)" 2>/dev/null; then
    ready=yes
    break
  fi
  if ! kill -0 "$prometheus_pid" 2>/dev/null; then
    break
  fi
  sleep 0.2
done
if [[ -z "$ready" ]]; then
  echo "deploy/check.sh: Prometheus did not become ready on 127.0.0.1:$port" >&2
  cat "$tmp/prometheus.log" >&2
  exit 1
fi
python3 deploy/monitoring/check_dashboard_queries.py --prometheus "http://127.0.0.1:$port"
