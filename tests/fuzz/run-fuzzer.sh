#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Runs one libFuzzer harness for FUZZ_SECONDS (default 15) from its seed corpus,
# writing new inputs to a scratch dir (never into the source tree).
# Counts as one test: "1 passed, 0 failed" unless the fuzzer found a crash.
set -u
exe=$1 corpus=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if "$exe" -max_total_time="${FUZZ_SECONDS:-15}" -rss_limit_mb=2048 -timeout=10 -artifact_prefix="$work/" \
	-print_final_stats=1 "$work" "$corpus" >"$work/log" 2>&1; then
	tail -n 3 "$work/log"
	echo "1 passed, 0 failed"
else
	tail -n 60 "$work/log"
	for a in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
		[ -f "$a" ] && { echo "reproducer ($a), base64:"; base64 -w0 "$a"; echo; }
	done
	echo "0 passed, 1 failed"
	exit 1
fi
