#!/usr/bin/python3
"""test_top.py - `resilctl top` (issue 11) against a real daemon:

- under a pseudo-terminal (pty): the first screen has the header and the
  open key first; a second refresh is drawn; `q` quits with exit 0 and the
  terminal restored (the output ends with ncurses' endwin: rmcup, the
  alternate screen left, and cnorm, the cursor shown again, as terminfo
  spells them for TERM=xterm); SIGTERM quits the same way;
- with stdout not a terminal: one plain snapshot, exit 0, open key first.
"""
import curses
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rpcutil  # noqa: E402

CFG = {"policies": {
    "*": {"breaker": {"failure_threshold": 0, "failure_rate_threshold": 0}},
    # One token a minute: the fill seen stays what the test took.
    "lim.*": {"limiter": {"rate": 1, "per_ms": 60000, "burst": 10},
              "bulkhead": {"max_concurrent": 4}}}}
TERM = "xterm"
ROWS, COLS = 30, 140


def ctl_path():
    return os.path.join(rpcutil.build_dir(), "resilctl")


def seed(c):
    """aaa.quiet: never failed; mmm.failing: failures; zzz.open: open
    (named last so only trouble can put it first); lim.busy: a limiter
    and a bulkhead in use."""
    c.ok("report", {"key": "aaa.quiet", "outcome": "success"})
    for i in range(5):
        c.ok("report", {"key": "mmm.failing", "outcome": "failure",
                        "error": {"class": "timeout", "message": "t%d" % i}})
    c.ok("force", {"key": "zzz.open", "state": "open", "reason": "test"})
    g = c.ok("acquire", {"key": "lim.busy"})
    return g


def read_until(fd, pred, timeout):
    """Read the pty until pred(bytes so far) or timeout; returns the
    bytes and whether pred held."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred(out):
            return out, True
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed its side
                break
            if not chunk:
                break
            out += chunk
    return out, pred(out)


def spawn_pty(sock):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ,
                struct.pack("HHHH", ROWS, COLS, 0, 0))
    env = dict(os.environ, TERM=TERM, LANG="C.UTF-8", LC_ALL="C.UTF-8")
    p = subprocess.Popen([ctl_path(), "-s", sock, "top"], stdin=slave,
                         stdout=slave, stderr=slave, env=env,
                         start_new_session=True, close_fds=True)
    os.close(slave)
    return p, master


def endwin_sequences():
    """rmcup and cnorm for TERM as terminfo has them (what endwin sends)."""
    r, w = os.pipe()
    curses.setupterm(TERM, w)
    seqs = [curses.tigetstr("rmcup"), curses.tigetstr("cnorm")]
    os.close(r)
    os.close(w)
    return [s for s in seqs if s]


def drain_exit(p, master, timeout=5.0):
    """Read the rest of the output until the child exits; (rc, bytes)."""
    out, _ = read_until(master, lambda b: p.poll() is not None, timeout)
    rest, _ = read_until(master, lambda b: False, 0.3)
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = p.wait()
    return rc, out + rest


def test_pty(tap, d, c):
    seqs = endwin_sequences()
    p, master = spawn_pty(d.sock)
    try:
        first, ok = read_until(
            master, lambda b: b"resild top" in b and b"zzz.open" in b and
            b"lim.busy" in b and b"1/4" in b, 10)  # lim.busy's row: last
        tap.check(ok, "the first screen has the header and the keys",
                  first[-2000:])
        i_open = first.find(b"zzz.open")
        others = [first.find(k) for k in (b"mmm.failing", b"aaa.quiet",
                                          b"lim.busy")]
        tap.check(i_open >= 0 and all(i_open < o for o in others if o >= 0)
                  and all(o >= 0 for o in others),
                  "the open key comes first, then the rest",
                  (i_open, others))
        i_fail, i_quiet = others[0], others[1]
        tap.check(i_fail < i_quiet, "a failing key before a quiet one",
                  (i_fail, i_quiet))
        tap.check(b"forced_open" in first, "the state is shown")
        tap.check(b"\x1b[3" in first, "the state is in colour")
        tap.check(b"1/4" in first and b"10%" in first,
                  "limiter fill and bulkhead use shown", first[-1500:])
        # A failure after the first refresh: the next one draws it in
        # mmm.failing's sparkline (a full block: the row's peak).
        c.ok("report", {"key": "mmm.failing", "outcome": "failure",
                        "error": {"class": "timeout", "message": "late"}})
        n1 = len(first)
        more, ok = read_until(master, lambda b: "\u2588".encode() in b, 5)
        tap.check(ok and "\u2588".encode() not in first,
                  "a second refresh draws the new failure in the sparkline",
                  repr(more[-1000:]))
        os.write(master, b"q")
        rc, tail = drain_exit(p, master)
        tap.check(rc == 0, "q quits with exit 0", rc)
        tail = (first[n1:] + more + tail)[-200:]
        tap.check(seqs and all(s in tail for s in seqs),
                  "the terminal is restored (endwin: rmcup, cnorm)",
                  repr(tail), repr(seqs))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)

    p, master = spawn_pty(d.sock)
    try:
        first, ok = read_until(master, lambda b: b"resild top" in b, 10)
        p.send_signal(signal.SIGTERM)
        rc, tail = drain_exit(p, master)
        tap.check(ok and rc == 0, "SIGTERM quits with exit 0", rc)
        tap.check(all(s in tail[-200:] for s in seqs),
                  "and restores the terminal", repr(tail[-200:]))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)


def test_snapshot(tap, d):
    r = subprocess.run([ctl_path(), "-s", d.sock, "top"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=10)
    out = r.stdout.decode()
    lines = out.splitlines()
    tap.check(r.returncode == 0, "not a terminal: exit 0", r.returncode,
              r.stderr)
    tap.check(b"\x1b" not in r.stdout, "plain text, no escape sequences")
    tap.check(len(lines) >= 6 and lines[0].startswith("resild top:") and
              lines[1].startswith("KEY"), "a header and the column titles",
              out)
    tap.check(len(lines) > 2 and lines[2].startswith("zzz.open") and
              "forced_open" in lines[2], "the open key first", out)
    tap.check(len(lines) > 3 and lines[3].startswith("mmm.failing") and
              " 5 " in lines[3], "then the failing key, 5 failures in 60 s",
              out)
    busy = [l for l in lines if l.startswith("lim.busy")]
    tap.check(busy and "10%" in busy[0] and "1/4" in busy[0],
              "limiter fill and bulkhead use", busy)
    r = subprocess.run([ctl_path(), "-s", d.sock, "top", "--limit", "1"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       timeout=10)
    lines = r.stdout.decode().splitlines()
    tap.check(r.returncode == 0 and len(lines) == 4 and
              lines[2].startswith("zzz.open") and "showing 1 of 4" in lines[3],
              "--limit bounds the rows", lines)


def main():
    tap = rpcutil.Tap()
    d = tap.start_daemon(CFG, "top")
    if d:
        c = d.connect()
        seed(c)
        tap.run("snapshot", test_snapshot, tap, d)
        tap.run("pty", test_pty, tap, d, c)
        c.close()
        tap.stop_daemon(d, "top")
    tap.finish()


if __name__ == "__main__":
    main()
