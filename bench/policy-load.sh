#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# How long does `cibroker policy check` take on N policies (default 10,000,
# one file each, every kind of condition)? The target is well under a second.
# Prints the times; no assertion (machines differ), so it is not a test.
# usage: bench/policy-load.sh [CIBROKER] [N]   (KEEP=1 keeps the temp dir)
set -eu
cibroker=${1:-build/cibroker}
n=${2:-10000}
tmp=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT INT TERM
umask 077
mkdir "$tmp/policies"
"$cibroker" keygen --out "$tmp/signing.pem" >/dev/null
cat >"$tmp/config.yaml" <<CFG
public_url: https://broker.example.com
signing: {keys: [$tmp/signing.pem]}
issuers:
  - {name: github, issuer: https://token.actions.githubusercontent.com, deny: {actor: [evil-bot]}}
policies: $tmp/policies
audit: {path: "-"}
CFG
awk -v n="$n" -v dir="$tmp/policies" 'BEGIN {
	for (i = 0; i < n; i++) {
		f = sprintf("%s/p%05d.yaml", dir, i)
		printf "name: deploy-%d\nissuer: github\n", i > f
		printf "allow:\n  repository: acme/repo-%d\n  repository_id: \"%d\"\n", i, 100000 + i > f
		printf "  repository_owner_id: \"365230\"\n  ref: \"refs/heads/*\"\n" > f
		printf "  event_name: [push, workflow_dispatch]\n" > f
		printf "  environment: {regex: \"prod(-eu|-us)?\"}\n" > f
		printf "deny: {actor: [\"dependabot[bot]\"]}\n" > f
		printf "credential:\n  type: jwt\n  audience: https://deploy.acme.internal\n" > f
		printf "  subject: \"repo:${repository}:env:${environment}\"\n" > f
		printf "  claims: {scope: \"deploy:%d\", run: \"${run_id}\"}\n", i > f
		close(f)
	}
}'
# wall time is what a reload costs; CPU time is the same on a busy machine
if [ -x /usr/bin/time ]; then
	/usr/bin/time -f "policy check of $n policies: %e s wall, %U s user, %S s system, %M KiB max RSS" \
		"$cibroker" policy check --config "$tmp/config.yaml"
else
	start=$(date +%s%N)
	"$cibroker" policy check --config "$tmp/config.yaml"
	end=$(date +%s%N)
	echo "policy check of $n policies: $(( (end - start) / 1000000 )) ms"
fi
