#!/usr/bin/env python3
"""
test_peergroups.py - allow_gids and admin_gids match a peer's supplementary
groups, not only its primary gid: a client service joins the socket's group
with SupplementaryGroups=resild (systemd/resild.service), so that is the
group its connections carry.

Clients run as uid/gid 65534 (nobody/nogroup) with chosen supplementary
groups (subprocess user=, group=, extra_groups=): needs root, else skipped.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rpcutil  # noqa: E402
from rpcutil import is_error  # noqa: E402

UID = 65534
MEMBER = 4242   # in allow_gids
ADMINS = 4243   # in admin_gids
OTHER = 4244    # in neither

CHILD = rpcutil.PEER_CHILD


def as_peer(d, groups, reqs):
    """Run CHILD as UID with primary gid UID and supplementary groups;
    {msgid: error} and the raw lines."""
    r = subprocess.run([sys.executable, "-c", CHILD, d.sock,
                        json.dumps(reqs)], user=UID, group=UID,
                       extra_groups=groups, capture_output=True, text=True,
                       timeout=10)
    lines = r.stdout.splitlines() + ["stderr: " + l
                                     for l in r.stderr.splitlines()]
    rows = {}
    for line in lines:
        if line.startswith("["):
            mid, err = json.loads(line)
            rows[mid] = err
    return rows, lines


def main():
    tap = rpcutil.Tap()
    if os.geteuid() != 0:
        tap.check(True, "supplementary groups # SKIP needs root to run a "
                        "client with chosen groups")
        tap.finish()
    d = tap.start_daemon({"socket_mode": "0666", "allow_gids": [MEMBER],
                          "admin_uids": [0], "admin_gids": [ADMINS]},
                         "peergroups")
    if not d:
        tap.finish()
    os.chmod(d.dir, 0o755)  # uid 65534 must reach the socket
    force = ["force", {"key": "grp.a", "state": "open"}]
    reset = ["reset", {"key": "grp.a"}]

    rows, out = as_peer(d, [MEMBER], [["ping", None], force])
    if any("Permission denied" in l for l in out):
        tap.check(True, "supplementary groups # SKIP uid %d cannot reach "
                        "the socket under %s" % (UID, os.path.dirname(d.dir)))
        tap.finish()
    tap.check(rows.get(1, "x") is None,
              "supplementary group in allow_gids: admitted", *out)
    tap.check(is_error(rows.get(2), "forbidden"),
              "... but not an admin: force is forbidden", *out)

    rows, out = as_peer(d, [OTHER], [["ping", None]])
    tap.check("closed" in out and 1 not in rows and
              all(is_error(e, "forbidden") for e in rows.values()),
              "supplementary groups outside allow_gids: refused", *out)

    rows, out = as_peer(d, [OTHER, ADMINS], [["ping", None], force, reset])
    tap.check(rows.get(1, "x") is None and rows.get(2, "x") is None and
              rows.get(3, "x") is None,
              "supplementary group in admin_gids (second of two): admitted "
              "as admin, force and reset served", *out)

    rows, out = as_peer(d, [], [["ping", None]])
    tap.check("closed" in out and
              all(is_error(e, "forbidden") for e in rows.values()),
              "no supplementary groups: refused", *out)
    tap.stop_daemon(d, "peergroups")
    tap.finish()


if __name__ == "__main__":
    main()
