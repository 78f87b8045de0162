#!/usr/bin/python3
"""test_peer_gone.py - the daemon's socket-level edges (issue 8).

  half-close, then exit (defect 4): a client holding the only permit of a
  bulkhead, with a second acquire parked, shuts down its write side and
  later exits.  Before the fix nothing noticed the exit after the EOF: the
  permit and the parked request stayed until wait_ms ran out, and others
  got bulkhead_full meanwhile.  Now the daemon polls half-closed peers
  every 25 ms: another client's parked acquire on the same key must pass
  within a bound far below the dead client's wait_ms.

  socket directory missing (12b): resild -s /missing-dir/x.sock says the
  directory does not exist (libuv's bind used to say "permission denied")
  and exits 1; a parent that is a file is named as not a directory.

TAP on stdout; exit 1 if anything failed (tests/run.sh counts the lines).
"""

import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rpcutil  # noqa: E402

CONFIG = {"policies": {"hc.*": {"bulkhead": {"max_concurrent": 1,
                                             "queue": 4}}}}
DEAD_WAIT_MS = 30000  # the dead client's parked acquire: far beyond the test
GONE_BOUND_S = 0.5    # the fix takes ~25 ms; generous for a loaded machine


def bulkhead(c, key):
    """(in_use, queued) of key's bulkhead, or None."""
    err, res = c.call("status", {"key": key})
    keys = (res or {}).get("keys") or [{}]
    bh = keys[0].get("bulkhead")
    if err is not None or not isinstance(bh, dict):
        return None
    return bh.get("in_use"), bh.get("queued")


def wait_bulkhead(c, key, want, timeout=5.0):
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = bulkhead(c, key)
        if got == want:
            return True, got
        time.sleep(0.01)
    return False, got


def child(sock, ctl):
    """The client that half-closes then exits; steered through ctl (a
    socketpair end): one byte per step."""
    c = rpcutil.Conn(sock)
    err, res = c.call("acquire", {"key": "hc.k"})
    ok = err is None and res.get("allow") is True
    c.request("acquire", {"key": "hc.k", "wait_ms": DEAD_WAIT_MS})
    ctl.sendall(b"1" if ok else b"0")
    ctl.recv(1)                       # go: half-close
    c.sock.shutdown(socket.SHUT_WR)
    ctl.sendall(b"h")
    ctl.recv(1)                       # go: exit (the kernel closes c)
    os._exit(0)


def t_half_close_exit(tap, d):
    ctl, ctl_child = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        ctl.close()
        try:
            child(d.sock, ctl_child)
        finally:
            os._exit(1)
    ctl_child.close()
    watcher = d.connect()
    try:
        tap.check(ctl.recv(1) == b"1", "half-close: the client holds the "
                  "bulkhead's only permit")
        up, got = wait_bulkhead(watcher, "hc.k", (1, 1))
        tap.check(up, "half-close: its second acquire is parked",
                  "bulkhead (in_use, queued) %r" % (got,))
        ctl.sendall(b"h")
        tap.check(ctl.recv(1) == b"h", "half-close: write side shut down")
        # Still alive, half-closed: it may read its answers, so it keeps
        # its permit and parked request (the interop test checks that
        # requests sent before the EOF are answered).
        ok, got = wait_bulkhead(watcher, "hc.k", (1, 1), 1.0)
        tap.check(ok, "half-close: a live half-closed client keeps its "
                  "permit and parked request", repr(got))
        other = d.connect()
        msgid = other.request("acquire", {"key": "hc.k", "wait_ms": 10000})
        ctl.sendall(b"x")
        os.waitpid(pid, 0)
        t0 = time.monotonic()
        err, res = other.wait(msgid, 15.0)
        dt = time.monotonic() - t0
        tap.check(err is None and (res or {}).get("allow") is True,
                  "half-close then exit: another client's parked acquire "
                  "passes", "error=%r result=%r" % (err, res))
        tap.check(dt < GONE_BOUND_S,
                  "half-close then exit: permit back in %.0f ms (< %.0f ms; "
                  "the dead client waited %d ms)"
                  % (dt * 1000, GONE_BOUND_S * 1000, DEAD_WAIT_MS))
        ok, got = wait_bulkhead(watcher, "hc.k", (1, 0))
        tap.check(ok, "half-close then exit: its parked request is gone, "
                  "the new holder has the permit", repr(got))
        other.close()
    finally:
        watcher.close()
        ctl.close()


def run_resild(sock):
    """Start resild on sock; (exit code, stderr) within 10 s."""
    binary = os.path.join(rpcutil.build_dir(), "resild")
    p = subprocess.run([binary, "-s", sock], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=10)
    return p.returncode, p.stderr.decode("utf-8", "replace")


def t_socket_dir(tap, tmp):
    missing = os.path.join(tmp, "no-such-dir")
    rc, err = run_resild(os.path.join(missing, "x.sock"))
    tap.check(rc == 1 and "directory %s does not exist" % missing in err
              and "permission denied" not in err,
              "socket in a missing directory: exit 1, the directory named",
              "exit %r, stderr %r" % (rc, err))
    afile = os.path.join(tmp, "a-file")
    with open(afile, "w"):
        pass
    rc, err = run_resild(os.path.join(afile, "x.sock"))
    tap.check(rc == 1 and "%s is not a directory" % afile in err,
              "socket under a regular file: exit 1, not a directory",
              "exit %r, stderr %r" % (rc, err))


def main():
    tap = rpcutil.Tap()
    d = tap.start_daemon(CONFIG, "peer-gone")
    if d:
        tap.run("half-close then exit", t_half_close_exit, tap, d)
        tap.check(d.alive(), "peer-gone: daemon still running")
        tap.stop_daemon(d, "peer-gone")
        tap.run("socket directory", t_socket_dir, tap, d.dir)
    tap.finish()


if __name__ == "__main__":
    main()
