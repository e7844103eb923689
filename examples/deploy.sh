#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Get a deploy credential from cibroker with nothing but POSIX sh and curl,
# for hosts without the cibroker binary; then either call the deploy API with
# it (when DEPLOY_URL is set) or print the access token.
#
#   CIBROKER_URL=https://broker.example.com sh deploy.sh web-deploy-prod
#
# Environment:
#   CIBROKER_URL                  the broker (https://, or http:// to loopback)
#   CIBROKER_AUDIENCE             the policy, unless given as $1
#   ACTIONS_ID_TOKEN_REQUEST_URL  GitHub Actions (permissions: id-token: write)
#   ACTIONS_ID_TOKEN_REQUEST_TOKEN
#   CIBROKER_ID_TOKEN_AUDIENCE    audience of the Actions ID token
#                                 (default: the broker's issuer, from discovery)
#   CIBROKER_ID_TOKEN             the ID token itself (GitLab `id_tokens:`)
#   DEPLOY_URL                    optional: POST $DEPLOY_URL/v1/deployments
#
# Exit codes as `cibroker exchange`: 2 usage, 3 refused (4xx), 4 unavailable.
# Tokens never appear on a command line (they are fed to curl on stdin) and
# are never written to a file. Only the JWT kind is handled here; for AWS
# credentials use `cibroker exchange --format env`.
set -eu

die() {
	code=$1
	shift
	printf 'deploy.sh: %s\n' "$*" >&2
	exit "$code"
}

# The first "NAME": "string" in a JSON text. Good for the broker's and the
# runtime's answers (tokens and URLs hold no quotes or backslashes); a value
# it cannot read comes out empty, which callers treat as an error.
json_field() {
	sed -n 's/.*"'"$1"'"[[:space:]]*:[[:space:]]*"\([^"\\]*\)".*/\1/p' | head -n 1
}

# curl's retries, bounded in total time: connection errors, 503 and curl's
# other transient codes (408, 429, 5xx gateways). What is still a 4xx after
# them is "refused" (3), as `cibroker exchange` says.
RETRY='--retry 6 --retry-connrefused --retry-max-time 60'

broker=${CIBROKER_URL:-}
audience=${1:-${CIBROKER_AUDIENCE:-}}
if [ -z "$broker" ] || [ -z "$audience" ]; then
	die 2 "usage: CIBROKER_URL=https://broker.example.com deploy.sh POLICY"
fi
broker=${broker%/}

# The ID token is a bearer credential: never send it in clear over a network.
# Scheme and host compare case-insensitively, as in the cibroker client.
lower=$(printf '%s' "$broker" | tr 'A-Z' 'a-z')
case $lower in
https://*) ;;
http://*)
	rest=${lower#http://}
	host=${rest%%[:/]*}
	case $rest in
	\[::1\]*) ;;
	*)
		case $host in
		localhost) ;;
		*[!0-9.]*) die 2 "CIBROKER_URL must be https:// (or http:// to loopback)" ;;
		127.*) ;;
		*) die 2 "CIBROKER_URL must be https:// (or http:// to loopback)" ;;
		esac
		;;
	esac
	;;
*) die 2 "CIBROKER_URL must be https:// (or http:// to loopback)" ;;
esac

nl='
'
if [ -n "${ACTIONS_ID_TOKEN_REQUEST_URL:-}" ] && [ -n "${ACTIONS_ID_TOKEN_REQUEST_TOKEN:-}" ]; then
	aud=${CIBROKER_ID_TOKEN_AUDIENCE:-}
	if [ -z "$aud" ]; then
		# shellcheck disable=SC2086
		aud=$(curl -sS --fail $RETRY "$broker/.well-known/openid-configuration" | json_field issuer)
		[ -n "$aud" ] || die 4 "no issuer in $broker/.well-known/openid-configuration"
	fi
	# -G appends audience= to the URL's existing query with '&'.
	# shellcheck disable=SC2086
	reply=$(printf 'Authorization: Bearer %s\n' "$ACTIONS_ID_TOKEN_REQUEST_TOKEN" |
		curl -sS $RETRY -w '\n%{http_code}' -H @- -G --data-urlencode "audience=$aud" \
			"$ACTIONS_ID_TOKEN_REQUEST_URL") || die 4 "cannot reach the GitHub Actions ID token endpoint"
	case ${reply##*"$nl"} in
	200) ;;
	4??) die 3 "GitHub Actions ID token request: HTTP ${reply##*"$nl"}" ;;
	*) die 4 "GitHub Actions ID token request: HTTP ${reply##*"$nl"}" ;;
	esac
	id_token=$(printf '%s\n' "${reply%"$nl"*}" | json_field value)
	reply=
	[ -n "$id_token" ] || die 4 "no ID token in the GitHub Actions answer"
elif [ -n "${CIBROKER_ID_TOKEN:-}" ]; then
	id_token=$CIBROKER_ID_TOKEN
else
	die 2 "no ID token: set permissions: id-token: write (GitHub) or id_tokens: CIBROKER_ID_TOKEN (GitLab)"
fi

# shellcheck disable=SC2086
answer=$(printf '%s' "$id_token" | curl -sS $RETRY -w '\n%{http_code}' -X POST "$broker/v1/token" \
	--data-urlencode 'grant_type=urn:ietf:params:oauth:grant-type:token-exchange' \
	--data-urlencode 'subject_token@-' \
	--data-urlencode 'subject_token_type=urn:ietf:params:oauth:token-type:jwt' \
	--data-urlencode "audience=$audience") || die 4 "cannot reach $broker"
id_token=
status=${answer##*"$nl"}
body=${answer%"$nl"*}

case $status in
200) ;;
*)
	error=$(printf '%s\n' "$body" | json_field error)
	desc=$(printf '%s\n' "$body" | json_field error_description)
	rid=$(printf '%s\n' "$body" | json_field request_id)
	case $status in
	4??) code=3 ;;
	*) code=4 ;;
	esac
	[ -n "$error" ] || die "$code" "token exchange: HTTP $status"
	die "$code" "$error${desc:+: $desc}${rid:+ (request_id $rid)}"
	;;
esac

token=$(printf '%s\n' "$body" | json_field access_token)
[ -n "$token" ] || die 4 "the broker's answer has no access_token"

if [ -z "${DEPLOY_URL:-}" ]; then
	printf '%s\n' "$token"
	exit 0
fi
printf 'Authorization: Bearer %s\n' "$token" |
	curl --fail-with-body -sS -H @- -X POST "${DEPLOY_URL%/}/v1/deployments" \
		--data-urlencode "sha=${GITHUB_SHA:-${CI_COMMIT_SHA:-}}"
