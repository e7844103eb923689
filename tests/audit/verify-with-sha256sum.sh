#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Check an audit log's hash chain with nothing but POSIX sh and sha256sum,
# independently of cibroker (docs/audit.md shows the same loop). Every line
# must end in "prev":"<SHA-256 of the line before>"} (64 zeros on line 1).
# Prints the first bad line and exits 1. Stricter than `cibroker audit
# verify`: a torn (crash) record is reported as a break too.
set -u
file=${1:?usage: verify-with-sha256sum.sh FILE}
[ -r "$file" ] || { echo "$file: cannot read" >&2; exit 2; }
prev=0000000000000000000000000000000000000000000000000000000000000000
n=0
while IFS= read -r line || [ -n "$line" ]; do
	n=$((n + 1))
	case $line in
	*"\"prev\":\"$prev\"}") ;;
	*) echo "$file:$n: chain broken"; exit 1 ;;
	esac
	prev=$(printf '%s' "$line" | sha256sum | cut -c1-64)
done <"$file"
echo "$file: $n records, chain intact"
