#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The layering rule of meson.build, checked on the sources: modules that must
# not speak HTTP do not include libcurl or libmicrohttpd headers.
root=${1:-.}
passed=0 failed=0
for f in util err diag doc config jwt jwk policy keys mint/jwt audit request exchange; do
	if grep -nE '#include *<(curl/|microhttpd)' "$root/broker/$f.c" >/dev/null 2>&1; then
		echo "broker/$f.c: must not include HTTP libraries"; failed=$((failed + 1))
	else
		passed=$((passed + 1))
	fi
done
for f in issuer mint/jwt policy jwt jwk config audit exchange request; do
	if grep -nE '#include *<microhttpd' "$root/broker/$f.c" >/dev/null 2>&1; then
		echo "broker/$f.c: only http.c speaks HTTP to clients"; failed=$((failed + 1))
	else
		passed=$((passed + 1))
	fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
