#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# One command for the cibroker benchmark (docs/benchmarks.md):
#   bench/run.sh [--smoke] [bench.py options...]
# Builds the release binary in build-bench/, then runs bench/bench.py:
# loopback only, broker pinned to CPU 0, wrk to CPU 1, Markdown table on stdout.
set -eu
cd "$(dirname "$0")/.."
for tool in meson ninja wrk openssl taskset /usr/bin/python3; do
	command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool missing (run ./bootstrap.sh)" >&2; exit 1; }
done
if [ ! -f build-bench/build.ninja ]; then
	meson setup build-bench --buildtype=release >/dev/null
fi
ninja -C build-bench cibroker >/dev/null
exec /usr/bin/python3 bench/bench.py "$@"
