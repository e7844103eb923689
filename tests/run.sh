#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The whole test suite, as CI runs it: installs what is missing (bootstrap.sh),
# builds twice (plain, and ASan+UBSan), runs every unit and integration test in
# both builds, runs each libFuzzer harness briefly, and ends with one line
# "N passed, N failed" that counts every test case of every run.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# The same steps as the Dockerfile: build dependencies + build, runtime libraries.
./bootstrap.sh --build build
./bootstrap.sh --runtime
export LC_ALL=C.UTF-8
FUZZ_SECONDS=${FUZZ_SECONDS:-15}
status=0

setup() { # dir, options...
	dir=$1
	shift
	if [ -f "$dir/build.ninja" ]; then
		meson setup --reconfigure "$dir" "$@" >/dev/null
	else
		meson setup "$dir" "$@" >/dev/null
	fi
	ninja -C "$dir" >/dev/null
}

echo "== build (release, as shipped) =="
ninja -C build >/dev/null
echo "== build (ASan + UBSan) =="
setup build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$ROOT/tests/lsan.supp:print_suppressions=0}

for dir in build build-asan; do
	echo "== meson test ($dir) =="
	meson test -C "$dir" --num-processes 2 --print-errorlogs || status=1
done

echo "== fuzz (${FUZZ_SECONDS}s per harness) =="
if CC=clang setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug; then
	meson test -C build-fuzz --suite fuzz --num-processes 1 --print-errorlogs \
		--test-args="-max_total_time=$FUZZ_SECONDS" || status=1
else
	echo "fuzz build failed"
	status=1
fi

/usr/bin/python3 tests/count.py build build-asan build-fuzz || status=1
exit $status
