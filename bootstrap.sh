#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Installs what cibroker needs on a fresh Debian 12 machine, and optionally
# builds it. Idempotent: packages already present are skipped and an existing
# build directory is reused, so a second run only rebuilds what changed.
# The Dockerfile runs this same script, so CI exercises its build steps.
#
#   ./bootstrap.sh                 build + test dependencies
#   ./bootstrap.sh --build DIR     ... then meson setup DIR && ninja -C DIR
#   ./bootstrap.sh --build-only DIR   build dependencies only, then build (Dockerfile)
#   ./bootstrap.sh --runtime       only the shared libraries the binary needs (Dockerfile)
set -eu

BUILD_PKGS="build-essential pkg-config meson ninja-build clang libclang-rt-14-dev \
  libjwt-dev libssl-dev libmicrohttpd-dev libcurl4-openssl-dev libjansson-dev \
  libyaml-dev libxml2-dev libhiredis-dev openssl ca-certificates curl"
TEST_PKGS="python3 python3-cryptography python3-jwt python3-requests python3-yaml \
  redis-server nginx-light wrk valgrind strace linux-perf awscli"
RUNTIME_PKGS="libssl3 libmicrohttpd12 libcurl4 libjansson4 libyaml-0-2 libxml2 libhiredis0.14 ca-certificates"

mode=all
dir=""
case "${1:-}" in
--build) mode=all; dir=${2:?--build needs a directory} ;;
--build-only) mode=build; dir=${2:?--build-only needs a directory} ;;
--runtime) mode=runtime ;;
"") ;;
*) echo "usage: $0 [--build DIR | --build-only DIR | --runtime]" >&2; exit 2 ;;
esac

case $mode in
all) pkgs="$BUILD_PKGS $TEST_PKGS" ;;
build) pkgs="$BUILD_PKGS" ;;
runtime) pkgs="$RUNTIME_PKGS" ;;
esac

want=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || want="$want $p"
done
if [ -n "$want" ]; then
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	export DEBIAN_FRONTEND=noninteractive
	echo "bootstrap: installing$want" >&2
	$SUDO apt-get update -q
	$SUDO apt-get install -y -q --no-install-recommends $want
fi

if [ -n "$dir" ]; then
	cd "$(dirname "$0")"
	if [ -f "$dir/build.ninja" ]; then
		# the same options as a fresh setup (and the Dockerfile), whatever
		# the directory was configured with before
		meson setup --reconfigure "$dir" --buildtype=release -Db_ndebug=true >/dev/null
	else
		meson setup "$dir" --buildtype=release -Db_ndebug=true >/dev/null
	fi
	ninja -C "$dir" cibroker
fi
