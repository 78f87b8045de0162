#!/bin/sh
# Install the Debian packages resild needs to build and test, only if missing.
# The single set-up step shared by `make run`, `make test` and `.ci/run`.
# neovim and python3-pynvim are the foreign MessagePack-RPC clients of
# tests/test_foreign.py.  systemd brings systemd-analyze (unit verify and
# security) and systemd-socket-activate for tests/test_systemd.py (a
# container that does not boot it is fine).  libncurses-dev: resilctl top
# draws with ncursesw.  On a fresh cloud machine
# unattended-upgrades or cloud-init may hold the dpkg lock: wait for it (up
# to 10 min) rather than fail.
set -eu
pkgs="build-essential pkg-config libuv1-dev libhiredis-dev libjansson-dev
      libmsgpack-dev python3 python3-msgpack redis-server neovim
      python3-pynvim curl systemd libncurses-dev"
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
lock="-o DPkg::Lock::Timeout=600"
# DPkg::Lock::Timeout covers the dpkg locks; apt-get update also takes the
# lists lock, which it does not wait for on every apt version: retry it.
tries=0
# shellcheck disable=SC2086
until $SUDO apt-get $lock update -qq >&2; do
    tries=$((tries + 1))
    [ "$tries" -ge 60 ] && { echo "deps: apt-get update kept failing" >&2; exit 1; }
    echo "deps: apt-get update failed (lock held?); retrying in 10 s" >&2
    sleep 10
done
# shellcheck disable=SC2086
$SUDO apt-get $lock install -y -qq --no-install-recommends $missing >&2
