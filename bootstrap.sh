#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Installs everything cibroker needs to build, run and test on a fresh Debian 12
# machine. Idempotent: packages already present are skipped, so a second run is a no-op.
# The Dockerfile's build stage runs this same script.
set -eu

BUILD_PKGS="build-essential pkg-config meson ninja-build clang libclang-rt-14-dev \
  libjwt-dev libssl-dev libmicrohttpd-dev libcurl4-openssl-dev libjansson-dev \
  libyaml-dev libxml2-dev libhiredis-dev openssl ca-certificates curl"
TEST_PKGS="python3 python3-cryptography python3-jwt python3-requests python3-yaml \
  redis-server nginx-light wrk valgrind"

want=""
for p in $BUILD_PKGS ${CIBROKER_BUILD_ONLY:+} $( [ -n "${CIBROKER_BUILD_ONLY:-}" ] || echo "$TEST_PKGS" ); do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || want="$want $p"
done
if [ -n "$want" ]; then
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -q
	$SUDO apt-get install -y -q --no-install-recommends $want
fi
