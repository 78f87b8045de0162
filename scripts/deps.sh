#!/bin/sh
# Install the Debian packages resild needs to build and test, only if missing.
# The single set-up step shared by `make run`, `make test` and `.ci/run`.
set -eu
pkgs="build-essential pkg-config libuv1-dev libhiredis-dev libjansson-dev
      libmsgpack-dev python3 python3-msgpack redis-server"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing" >&2
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >&2
