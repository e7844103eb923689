#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# `cibroker policy check|test|explain` end to end: exit codes, FILE:LINE:COL
# diagnostics across files, case output and the final count, explain output.
# usage: cli-test.sh SOURCE_ROOT CIBROKER
set -u
root=${1:?source root}
cb=${2:?cibroker binary}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
umask 077
passed=0 failed=0

ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
# expect CODE DESCRIPTION -- COMMAND...: output in $tmp/out, $tmp/err
expect() {
	code=$1 what=$2
	shift 3
	"$@" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	if [ "$rc" -eq "$code" ]; then ok; else
		bad "$what: exit $rc, wanted $code"
		sed 's/^/    out| /' "$tmp/out"
		sed 's/^/    err| /' "$tmp/err"
	fi
}
has() { # has FILE STRING DESCRIPTION
	if grep -qF -- "$2" "$1"; then ok; else bad "$3: no '$2' in $(basename "$1")"; sed 's/^/    | /' "$1"; fi
}
hasnt() {
	if grep -qF -- "$2" "$1"; then bad "$3: unexpected '$2'"; else ok; fi
}

"$cb" keygen --out "$tmp/key.pem" >/dev/null 2>&1 || { echo "keygen failed"; echo "0 passed, 1 failed"; exit 1; }
mkcfg() { # mkcfg NAME POLICYDIR
	sed -e "s|@SIGNING_KEY@|$tmp/key.pem|" -e "s|@POLICIES@|$2|" "$root/tests/policies/config.yaml" >"$tmp/$1"
}
mkcfg good.yaml "$root/policies"

# --- help, version, usage --------------------------------------------------
expect 0 "policy --help" -- "$cb" policy --help
has "$tmp/out" "cibroker policy check" "help text"
for sub in check test explain; do
	expect 0 "policy $sub --help" -- "$cb" policy $sub --help
	expect 0 "policy $sub --version" -- "$cb" policy $sub --version
done
expect 2 "no subcommand" -- "$cb" policy
expect 2 "unknown subcommand" -- "$cb" policy frobnicate
expect 2 "check without --config" -- "$cb" policy check
expect 2 "unknown option" -- "$cb" policy check --config "$tmp/good.yaml" --frob
expect 2 "--config twice" -- "$cb" policy check --config "$tmp/good.yaml" --config "$tmp/good.yaml"
expect 2 "test without cases" -- "$cb" policy test --config "$tmp/good.yaml"
expect 2 "explain without --audience" -- "$cb" policy explain --config "$tmp/good.yaml" --claims x.json
expect 2 "check with a stray argument" -- "$cb" policy check --config "$tmp/good.yaml" extra

# --- check -----------------------------------------------------------------
expect 0 "check of the example policies" -- "$cb" policy check --config "$tmp/good.yaml"
has "$tmp/out" "6 policies OK" "check summary"
expect 0 "check --config=FILE" -- "$cb" policy check --config="$tmp/good.yaml"

mkdir "$tmp/bad"
cat >"$tmp/bad/a.yaml" <<'P'
name: web
issuer: github
allow:
  repository_id: "1"
  refs: refs/heads/main
credential: {type: jwt, audience: x}
---
name: dup
issuer: github
allow: {repository_id: "2", ref: {regex: "a)|(b"}}
credential: {type: jwt, audience: x, ttl: 2h}
P
cat >"$tmp/bad/b.yml" <<'P'
- name: dup
  issuer: gitlub
  allow: {project_id: "1"}
  credential: {type: jwt, audience: x, claims: {sub: x}}
P
printf '{"name": "j", "issuer": "github", "allow": {"repository_id": "3"},\n "credential": {"type": "jwt", "audience": "x", "subject": "${x"}}\n' >"$tmp/bad/c.json"
echo "not a policy" >"$tmp/bad/README.md"
echo "name: [" >"$tmp/bad/.hidden.yaml"
mkcfg bad.yaml "$tmp/bad"
expect 1 "check of broken policies" -- "$cb" policy check --config "$tmp/bad.yaml"
has "$tmp/err" "$tmp/bad/a.yaml:5:3: warning: 'refs' is not a GitHub Actions claim; did you mean 'ref'?" "typo warning"
has "$tmp/err" "$tmp/bad/a.yaml:10:42: condition on 'ref': bad regex: unmatched ')'" "regex error"
has "$tmp/err" "$tmp/bad/a.yaml:11:43: ttl 7200 s is above limits.max_ttl (3600 s)" "ttl error"
has "$tmp/err" "$tmp/bad/b.yml:1:9: duplicate policy name 'dup' (first defined at $tmp/bad/a.yaml:8:7)" "duplicate names both places"
has "$tmp/err" "$tmp/bad/b.yml:2:11: unknown issuer 'gitlub' (the config defines: github, gitlab)" "unknown issuer"
has "$tmp/err" "$tmp/bad/b.yml:4:49: claim 'sub' is reserved" "reserved claim"
has "$tmp/err" "$tmp/bad/c.json:2:60: template: unterminated '\${'" "JSON file position"
has "$tmp/err" "policy check failed: 6 errors" "failure summary"
hasnt "$tmp/err" "README.md" "other files are ignored"
hasnt "$tmp/err" ".hidden.yaml" "dotfiles are ignored"
hasnt "$tmp/out" "policies OK" "no OK line on failure"

mkcfg missing.yaml "$tmp/no-such-dir"
expect 1 "check with a missing policies directory" -- "$cb" policy check --config "$tmp/missing.yaml"
has "$tmp/err" "$tmp/missing.yaml:" "missing dir names the config"
has "$tmp/err" "cannot open policies directory" "missing dir message"

# a config that breaks rules still has its policies checked: one run, every error
sed -e 's|^  path: "-"|  path: "-"\n  sync: sometimes|' -e 's|actor: \[evil-bot\]|actor: {regex: "a)"}|' \
	"$tmp/bad.yaml" >"$tmp/badcfg.yaml"
expect 1 "check of a broken config and broken policies" -- "$cb" policy check --config "$tmp/badcfg.yaml"
has "$tmp/err" "audit.sync: must be 'always' or 'none', not 'sometimes'" "config error"
has "$tmp/err" "$tmp/bad/a.yaml:10:42: condition on 'ref': bad regex: unmatched ')'" "policy error despite config error"
has "$tmp/err" "$tmp/badcfg.yaml:12:22: condition on 'actor': bad regex" "issuer deny error despite config error"
has "$tmp/err" "policy check failed: 8 errors" "every error counted"

mkdir "$tmp/allowall"
printf 'name: any\nissuer: github\nallow: {repository: "*"}\ncredential: {type: jwt, audience: x}\n' >"$tmp/allowall/p.yaml"
mkcfg allowall.yaml "$tmp/allowall"
expect 1 "allow that matches everything" -- "$cb" policy check --config "$tmp/allowall.yaml"
has "$tmp/err" "$tmp/allowall/p.yaml:3:1: policy 'any': allow needs at least one condition that is not match-all" "match-all error"

mkdir "$tmp/warn"
printf 'name: w\nissuer: github\nallow: {repository: acme/web}\ncredential: {type: jwt, audience: x}\n' >"$tmp/warn/p.yaml"
mkcfg warn.yaml "$tmp/warn"
expect 0 "warnings do not fail check" -- "$cb" policy check --config "$tmp/warn.yaml"
has "$tmp/err" "$tmp/warn/p.yaml:3:9: warning: policy 'w' pins 'repository' by name without 'repository_id'" "id warning"
has "$tmp/out" "1 policy OK, 1 warning" "summary with warnings"

# --- test ------------------------------------------------------------------
cases="$root/tests/policies/cases"
expect 0 "test of passing cases" -- "$cb" policy test --config "$tmp/good.yaml" "$cases/github-push-main.allow.json" \
	"$cases/github-push-main.deny-branch.json"
has "$tmp/out" "PASS $cases/github-push-main.allow.json: allow (expected allow)" "pass allow line"
has "$tmp/out" "PASS $cases/github-push-main.deny-branch.json: deny: claim 'ref' did not match (expected deny)" "pass deny line"
if [ "$(tail -n 1 "$tmp/out")" = "2 passed, 0 failed" ]; then ok; else bad "final line: $(tail -n 1 "$tmp/out")"; fi

sed 's/"expect": "deny"/"expect": "allow"/' "$cases/github-push-main.deny-branch.json" >"$tmp/wrong.json"
printf '{"audience": "api-deploy-prod", "claims": {}, "expect": "maybe"}' >"$tmp/badexpect.json"
printf '{"audience": "x", "claims": {}, "expect": "deny", "audience": "y"}' >"$tmp/dupkey.json"
printf '{"audience": "x", "claims": {}, "expect": "deny", "extra": 1}' >"$tmp/extra.json"
expect 1 "test with failures" -- "$cb" policy test --config "$tmp/good.yaml" "$tmp/wrong.json" "$tmp/badexpect.json" \
	"$tmp/dupkey.json" "$tmp/extra.json" "$tmp/nonexistent.json" "$cases/github-push-main.allow.json"
has "$tmp/out" "FAIL $tmp/wrong.json: deny: claim 'ref' did not match (expected allow)" "fail line"
has "$tmp/out" "FAIL $tmp/badexpect.json: bad case file" "bad expect"
has "$tmp/out" "FAIL $tmp/dupkey.json: bad case file" "duplicate keys"
has "$tmp/out" "FAIL $tmp/extra.json: bad case file: unknown key 'extra'" "unknown case key"
has "$tmp/out" "FAIL $tmp/nonexistent.json: bad case file: cannot read" "missing case"
hasnt "$tmp/out" "refs/heads/main" "client reasons never show expected values"
if [ "$(tail -n 1 "$tmp/out")" = "1 passed, 5 failed" ]; then ok; else bad "final line: $(tail -n 1 "$tmp/out")"; fi

expect 1 "test -v prints audit reasons" -- "$cb" policy test --verbose --config "$tmp/good.yaml" "$tmp/wrong.json"
has "$tmp/out" "    audit: policy 'api-deploy-prod' allow condition on claim 'ref'" "audit line"
expect 1 "test with a broken config" -- "$cb" policy test --config "$tmp/bad.yaml" "$cases/github-push-main.allow.json"
has "$tmp/err" "unknown issuer 'gitlub'" "test shows load errors"
if [ "$(tail -n 1 "$tmp/out")" = "0 passed, 1 failed" ]; then ok; else bad "final line with a broken config: $(tail -n 1 "$tmp/out")"; fi

# a case whose iss is not the policy issuer's string is denied, whatever its type
for iss in '"https://gitlab.com"' null 5 '["https://token.actions.githubusercontent.com"]' '{}'; do
	/usr/bin/python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); c["claims"]["iss"]=json.loads(sys.argv[2]); c["expect"]="deny"; json.dump(c, open(sys.argv[3], "w"))' \
		"$cases/github-push-main.allow.json" "$iss" "$tmp/iss.json"
	expect 0 "iss $iss denies" -- "$cb" policy test --config "$tmp/good.yaml" "$tmp/iss.json"
	has "$tmp/out" "not the policy's issuer" "iss $iss reason"
done

# --- explain ---------------------------------------------------------------
/usr/bin/python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["claims"]; json.dump(c, open(sys.argv[2], "w"))' \
	"$cases/github-push-main.deny-branch.json" "$tmp/claims-deny.json"
/usr/bin/python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["claims"]; json.dump(c, open(sys.argv[2], "w"))' \
	"$cases/github-push-main.allow.json" "$tmp/claims-allow.json"
expect 0 "explain allow" -- "$cb" policy explain --config "$tmp/good.yaml" --audience api-deploy-prod --claims "$tmp/claims-allow.json"
has "$tmp/out" "policy api-deploy-prod ($root/policies/github-push-main.yaml:5:7), issuer github" "explain header"
has "$tmp/out" "issuer-deny actor = \"alice\": not held" "issuer deny line"
expect 0 "explain with a case file" -- "$cb" policy explain --config "$tmp/good.yaml" --audience api-deploy-prod \
	--claims "$cases/github-push-main.allow.json"
has "$tmp/err" "looks like a policy test case" "case file noted"
has "$tmp/out" "decision: allow" "case file's claims explained"
has "$tmp/out" "allow       ref = \"refs/heads/main\": held" "held line"
has "$tmp/out" "subject: repo:acme/api:ref:refs/heads/main" "rendered subject"
has "$tmp/out" "decision: allow" "allow decision"
expect 1 "explain deny" -- "$cb" policy explain --config "$tmp/good.yaml" --audience api-deploy-prod --claims "$tmp/claims-deny.json"
has "$tmp/out" "allow       ref = \"refs/heads/feature\": not held -> deny (want \"refs/heads/main\")" "not held line"
has "$tmp/out" "decision: deny: claim 'ref' did not match" "deny decision"
expect 1 "explain unknown audience" -- "$cb" policy explain --config "$tmp/good.yaml" --audience nope --claims "$tmp/claims-allow.json"
has "$tmp/out" "no policy named 'nope'" "unknown audience"
printf '[1]' >"$tmp/array.json"
expect 1 "explain with non-object claims" -- "$cb" policy explain --config "$tmp/good.yaml" --audience api-deploy-prod --claims "$tmp/array.json"
has "$tmp/err" "not a JSON object" "claims must be an object"

# --- examples/policy-ci: the example policy repository stays valid ---------
ex="$root/examples/policy-ci"
sed -e "s|/tmp/ci-signing.pem|$tmp/key.pem|" -e "s|^policies: .*|policies: $ex/policies|" "$ex/ci/config.yaml" >"$tmp/ex.yaml"
expect 0 "example policy repo: check" -- "$cb" policy check --config "$tmp/ex.yaml"
has "$tmp/out" "2 policies OK" "example policies load"
hasnt "$tmp/err" "warning" "example policies have no warnings"
expect 0 "example policy repo: test" -- "$cb" policy test --config "$tmp/ex.yaml" "$ex"/cases/*.json
has "$tmp/out" " 0 failed" "example cases pass"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
