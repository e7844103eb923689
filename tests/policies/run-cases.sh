#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Runs the example policies' case files through `cibroker policy test`, with
# a throwaway signing key and a config pointing at the repository's
# policies/. The last line is cibroker's "N passed, N failed".
# usage: run-cases.sh SOURCE_ROOT CIBROKER
set -eu
root=${1:?source root}
cibroker=${2:?cibroker binary}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
umask 077
"$cibroker" keygen --out "$tmp/signing.pem" >/dev/null
sed -e "s|@SIGNING_KEY@|$tmp/signing.pem|" -e "s|@POLICIES@|$root/policies|" \
	"$root/tests/policies/config.yaml" >"$tmp/config.yaml"
# check must pass (warnings allowed) before the cases mean anything
"$cibroker" policy check --config "$tmp/config.yaml" >&2
exec "$cibroker" policy test --config "$tmp/config.yaml" "$root"/tests/policies/cases/*.json
