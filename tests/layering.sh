#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The layering rule of meson.build, checked on the sources themselves:
# only http.c (and the dev issuer it serves) speaks HTTP to clients
# (libmicrohttpd); only the issuer cache, the STS client and the CLI fetch
# (libcurl); the core (jwt, policy, mint/jwt, audit, exchange) does neither.
root=${1:-.}
cd "$root/broker" || exit 1
passed=0 failed=0
check() { # file, forbidden-include-regex, what
	if grep -nE "#include *<($2)" "$1" >/dev/null 2>&1; then
		echo "broker/$1: $3"
		failed=$((failed + 1))
	else
		passed=$((passed + 1))
	fi
}
for f in *.c mint/*.c; do
	case $f in
	http.c | devissuer.c) ;;
	*) check "$f" "microhttpd" "only http.c speaks HTTP to clients" ;;
	esac
	case $f in
	issuer.c | mint/aws*.c | client.c | cmd-*.c) ;;
	*) check "$f" "curl/" "only issuer, mint and the CLI fetch over HTTP" ;;
	esac
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
