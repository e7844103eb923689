#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# `cibroker keygen` as a user runs it: file mode, PEM format, the printed kid
# (checked against a thumbprint computed by python3-cryptography), refusal to
# overwrite, and the exit codes of usage errors.
# usage: test-keygen.sh PATH-TO-CIBROKER
bin=${1:?usage: test-keygen.sh CIBROKER}
here=$(dirname "$0")
tmp=$(mktemp -d /tmp/test-keygen.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0

check() { # check DESCRIPTION COMMAND...
	desc=$1; shift
	if "$@"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1)); echo "FAIL: $desc" >&2
	fi
}

"$bin" keygen --out "$tmp/k.pem" >"$tmp/out" 2>"$tmp/err"
check "keygen exits 0" [ $? -eq 0 ]
kid=$(cat "$tmp/out")
check "stdout is one 43-char kid" [ "$(printf %s "$kid" | wc -c)" -eq 43 ] && [ "$(wc -l <"$tmp/out")" -eq 1 ]
check "kid is base64url" sh -c "printf %s '$kid' | grep -Eq '^[A-Za-z0-9_-]{43}$'"
check "file mode is 0600" [ "$(stat -c %a "$tmp/k.pem")" = 600 ]
check "PKCS#8 PEM" [ "$(head -n 1 "$tmp/k.pem")" = "-----BEGIN PRIVATE KEY-----" ]
check "kid is the RFC 7638 thumbprint" [ "$(/usr/bin/python3 "$here/mint-verify.py" thumbprint "$tmp/k.pem")" = "$kid" ]

cp "$tmp/k.pem" "$tmp/before"
"$bin" keygen --out "$tmp/k.pem" >"$tmp/out2" 2>"$tmp/err2"
check "existing file: exit 1" [ $? -eq 1 ]
check "existing file: says so" grep -q "already exists" "$tmp/err2"
check "existing file: untouched" cmp -s "$tmp/before" "$tmp/k.pem"
check "existing file: nothing on stdout" [ ! -s "$tmp/out2" ]

"$bin" keygen --out="$tmp/k2.pem" >"$tmp/out3" 2>/dev/null
check "--out=FILE works" [ $? -eq 0 ] && [ -f "$tmp/k2.pem" ]
check "two keys, two kids" [ "$(cat "$tmp/out3")" != "$kid" ]

for args in "" "--out" "--bogus" "--out $tmp/a.pem --out $tmp/b.pem" "--out $tmp/c.pem extra"; do
	# shellcheck disable=SC2086
	"$bin" keygen $args >/dev/null 2>&1
	check "usage error '$args' exits 2" [ $? -eq 2 ]
done
check "no file written on usage errors" [ ! -e "$tmp/a.pem" ] && [ ! -e "$tmp/c.pem" ]
"$bin" keygen --help >"$tmp/help" 2>&1
check "--help exits 0" [ $? -eq 0 ]
check "--help shows usage" grep -q "usage: cibroker keygen --out FILE" "$tmp/help"
"$bin" keygen --version >"$tmp/ver" 2>&1
check "--version exits 0 and names cibroker" grep -q "^cibroker " "$tmp/ver"
"$bin" keygen --out "$tmp/missing-dir/k.pem" >/dev/null 2>"$tmp/err4"
check "unwritable path exits 1" [ $? -eq 1 ]
check "unwritable path says why" grep -q "No such file or directory" "$tmp/err4"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
