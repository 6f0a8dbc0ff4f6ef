#!/usr/bin/env bash
# Replays the Dockerfile's dependency layer without a container engine: the files of its first
# COPY (Cargo.toml and Cargo.lock) go into a temporary directory, where its RUN instruction that
# holds `cargo fetch` (the stubs for every target of the manifest, the fetch, the clean-up) runs
# as it is, with `sh -c` as Docker runs it. Fails when that RUN fails, e.g. when Cargo.toml
# declares a target the RUN does not stub, or Cargo.lock is out of date. Run by .ci/run; the
# commands come from the Dockerfile itself, so the two cannot drift apart.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Dockerfile's instructions, one a line: continuation lines joined, comments dropped.
instructions=$(sed -e '/^[[:space:]]*#/d' Dockerfile | sed -e ':a' -e '/\\$/N; s/\\\n[[:space:]]*/ /; ta')

copy=$(grep -m1 '^COPY ' <<<"$instructions" || true)
run=$(grep '^RUN .*cargo fetch' <<<"$instructions" || true)
if [[ -z "$copy" || -z "$run" ]]; then
  echo "Dockerfile: no COPY or no RUN with 'cargo fetch' found" >&2
  exit 1
fi
if [[ $(grep -c . <<<"$run") -ne 1 ]]; then
  echo "Dockerfile: more than one RUN with 'cargo fetch'" >&2
  exit 1
fi
# COPY <source>... <destination>: every word but the first and the last is a source.
read -r -a words <<<"$copy"
sources=("${words[@]:1:${#words[@]}-2}")
command=${run#RUN }

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cp -- "${sources[@]}" "$dir"/
echo "in a temporary directory with ${sources[*]}:"
echo "  $command"
(cd "$dir" && sh -c "$command")
echo "the Dockerfile's dependency layer builds"
