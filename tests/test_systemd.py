#!/usr/bin/env python3
"""
test_systemd.py - resild under systemd's protocols, played by this harness:

- NOTIFY_SOCKET (a path, and an "@abstract" name): READY=1 only once the
  socket listens (the daemon is frozen with SIGSTOP the moment READY
  arrives, and a connect must still succeed), STATUS= lines, WATCHDOG=1
  at about half of WATCHDOG_USEC and never a gap of a whole interval, no
  watchdog when WATCHDOG_PID names another process, RELOADING=1 +
  MONOTONIC_USEC then READY=1 around SIGHUP (skipped while reload is not
  built), STOPPING=1 on SIGTERM;
- socket activation through Debian's systemd-socket-activate: the daemon
  serves the socket it was passed, never probes or unlinks it (the socket
  file keeps its inode after the daemon exits); a passed fd that is not a
  listening stream socket is refused with exit 1; LISTEN_PID of another
  process is ignored;
- the units: `systemd-analyze verify` on resild.service and resild.socket,
  `systemd-analyze security --offline=yes` exposure <= 1.5;
- `make install DESTDIR=... PREFIX=/usr` lays out every file (ExecStart
  rewritten, soname links, resil.pc usable by pkg-config and a program
  linked through it), never overwrites a configuration, and
  `make uninstall` removes what it installed; the installed sysusers and
  tmpfiles entries, applied to a scratch root, give a user and group
  resild and /run/resild resild:resild 0750.

Everything runs in temporary directories; nothing under /etc, /run or /usr
is touched.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rpcutil  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_EXPOSURE_TCP = 2.0  # with systemd/redis-tcp.conf (issue 13)
MAX_EXPOSURE = 1.5


def have(tool):
    return shutil.which(tool) is not None


def skip(tap, name, why):
    tap.check(True, "%s # SKIP %s" % (name, why))


class Notify:
    """The receiving end of NOTIFY_SOCKET: a datagram socket bound to a path
    in dir, or to an abstract name."""

    def __init__(self, dir, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "resild-test-notify-%d-%d" % (os.getpid(), id(self))
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            self.env = os.path.join(dir, "notify.sock")
            self.sock.bind(self.env)

    def recv(self, timeout):
        """One datagram as a dict of its KEY=VALUE lines (plus its arrival
        time under "_t"), or None after timeout seconds."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        msg = {"_t": time.monotonic()}
        for line in data.decode("utf-8", "replace").split("\n"):
            k, _, v = line.partition("=")
            msg[k] = v
        return msg

    def wait_for(self, key, timeout, seen=None):
        """Datagrams until one carries key; that one, or None.  Every
        datagram read is appended to seen."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(deadline - time.monotonic())
            if msg is None:
                return None
            if seen is not None:
                seen.append(msg)
            if key in msg:
                return msg

    def close(self):
        self.sock.close()


def spawn(tap, d, env=None, prefix=None, pass_fds=()):
    """Start d's resild (config written, argv optionally behind a prefix
    such as systemd-socket-activate) without waiting for it; registered
    with tap for logs and cleanup."""
    import json
    with open(d.config_path, "w") as f:
        json.dump(d.config, f)
    e = dict(os.environ)
    for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
              "LISTEN_PID", "LISTEN_FDNAMES"):
        e.pop(k, None)
    e.update(env or {})
    argv = (prefix or []) + [d.binary, "-s", d.sock, "-c", d.config_path]
    with open(d.log_path, "wb") as log:
        d.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=log, env=e, pass_fds=pass_fds)
    tap.daemons.append(d)
    return d


def can_connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def ping_ok(d):
    c = d.connect()
    try:
        return c.ok("ping")
    finally:
        c.close()


# --- NOTIFY_SOCKET -------------------------------------------------------

def t_ready_after_listen(tap):
    d = rpcutil.Daemon({}, "ready")
    n = Notify(d.dir)
    spawn(tap, d, {"NOTIFY_SOCKET": n.env})
    ready = n.wait_for("READY", 10.0)
    frozen = False
    if ready is not None:
        # Freeze the daemon where it stands: had it said READY before
        # listen(2), the connect below could not succeed.
        os.kill(d.pid, signal.SIGSTOP)
        frozen = True
    try:
        tap.check(ready is not None and ready.get("READY") == "1",
                  "READY=1 received", repr(ready))
        tap.check(ready is not None and can_connect(d.sock),
                  "the socket accepts at the moment READY=1 arrives")
    finally:
        if frozen:
            os.kill(d.pid, signal.SIGCONT)
    st = (ready or {}).get("STATUS", "")
    tap.check(d.sock in st and "connection" in st,
              "READY carries a STATUS= line naming the socket", repr(st))
    tap.check(ready is not None and ping_ok(d) is not None,
              "the daemon serves after READY")
    seen = []
    os.kill(d.pid, signal.SIGTERM)
    stop = n.wait_for("STOPPING", 10.0, seen)
    tap.check(stop is not None and stop.get("STOPPING") == "1",
              "STOPPING=1 on SIGTERM", repr(seen))
    tap.check(stop is not None and "draining" in stop.get("STATUS", ""),
              "STOPPING carries a STATUS= line", repr(stop))
    rc = d.stop()
    tap.check(rc == 0, "exit 0 after SIGTERM under NOTIFY_SOCKET",
              "exit %r" % rc)
    n.close()


def t_watchdog(tap):
    """WATCHDOG_USEC=1 s: a ping every ~0.5 s, over the abstract socket."""
    interval = 1.0
    observe = 3.5
    d = rpcutil.Daemon({}, "watchdog")
    n = Notify(d.dir, abstract=True)
    spawn(tap, d, {"NOTIFY_SOCKET": n.env,
                   "WATCHDOG_USEC": str(int(interval * 1e6))})
    ready = n.wait_for("READY", 10.0)
    tap.check(ready is not None, "abstract NOTIFY_SOCKET: READY=1 received")
    pings = []
    deadline = time.monotonic() + observe
    while time.monotonic() < deadline:
        msg = n.recv(deadline - time.monotonic())
        if msg and "WATCHDOG" in msg:
            pings.append(msg["_t"])
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    # Half the interval: 7 pings in 3.5 s; allow a loaded machine 4..9.
    tap.check(4 <= len(pings) <= 9,
              "WATCHDOG=1 about every WATCHDOG_USEC/2 (%d in %.1f s)" %
              (len(pings), observe), "gaps %r" % gaps)
    tap.check(gaps and max(gaps) < interval,
              "no gap between pings reaches WATCHDOG_USEC",
              "gaps %r" % gaps)
    tap.check(gaps and min(gaps) > interval / 8,
              "pings are paced, not a flood", "gaps %r" % gaps)
    tap.check("watchdog" in d.log(), "the log names the watchdog period")
    tap.stop_daemon(d, "watchdog")
    n.close()


def t_watchdog_other_pid(tap):
    d = rpcutil.Daemon({}, "wdpid")
    n = Notify(d.dir)
    spawn(tap, d, {"NOTIFY_SOCKET": n.env, "WATCHDOG_USEC": "200000",
                   "WATCHDOG_PID": "1"})
    seen = []
    ready = n.wait_for("READY", 10.0, seen)
    n.wait_for("WATCHDOG", 1.0, seen)  # ten intervals' worth
    tap.check(ready is not None and
              not any("WATCHDOG" in m for m in seen),
              "WATCHDOG_PID of another process: no WATCHDOG=1",
              repr(seen))
    tap.stop_daemon(d, "wdpid")
    n.close()


def t_reload(tap):
    d = rpcutil.Daemon({}, "reload")
    n = Notify(d.dir)
    spawn(tap, d, {"NOTIFY_SOCKET": n.env})
    if n.wait_for("READY", 10.0) is None:
        tap.check(False, "reload: READY=1 received")
        return
    seen = []
    os.kill(d.pid, signal.SIGHUP)
    rel = n.wait_for("RELOADING", 3.0, seen)
    if rel is None and "not implemented" in d.log():
        skip(tap, "SIGHUP: RELOADING=1 + MONOTONIC_USEC, then READY=1",
             "reload is not built yet (SIGHUP is ignored)")
    else:
        mono = int(time.monotonic() * 1e6)
        tap.check(rel is not None and rel.get("RELOADING") == "1" and
                  re.fullmatch(r"\d+", rel.get("MONOTONIC_USEC", "")) and
                  abs(int(rel["MONOTONIC_USEC"]) - mono) < 60e6,
                  "SIGHUP: RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC)",
                  repr(seen))
        again = n.wait_for("READY", 10.0, seen)
        tap.check(again is not None and again["_t"] >= rel["_t"],
                  "then READY=1 again", repr(seen))
    tap.stop_daemon(d, "reload")
    n.close()


def t_no_notify_socket(tap):
    """A malformed NOTIFY_SOCKET is logged; the daemon still serves."""
    d = rpcutil.Daemon({}, "badnotify")
    spawn(tap, d, {"NOTIFY_SOCKET": "relative/path"})
    up = d.wait_ready()
    tap.check(up and ping_ok(d) is not None and "NOTIFY_SOCKET" in d.log(),
              "malformed NOTIFY_SOCKET: logged, daemon serves anyway")
    tap.stop_daemon(d, "badnotify")


# --- socket activation ---------------------------------------------------

def t_activation(tap):
    tool = shutil.which("systemd-socket-activate")
    if not tool:
        skip(tap, "socket activation", "systemd-socket-activate not "
             "installed (Debian package systemd)")
        return
    d = rpcutil.Daemon({}, "activate")
    # systemd-socket-activate binds, then execs resild in place at the
    # first connection with LISTEN_FDS=1 and LISTEN_PID=its own pid.
    spawn(tap, d, prefix=[tool, "-l", d.sock])
    deadline = time.monotonic() + 10
    while not os.path.exists(d.sock) and time.monotonic() < deadline:
        time.sleep(0.01)
    ino = os.stat(d.sock).st_ino if os.path.exists(d.sock) else None
    res = None
    try:
        res = ping_ok(d)
    except Exception as e:  # noqa: BLE001
        tap.diag("ping: %r" % e)
    tap.check(res is not None and res.get("pid") == d.pid,
              "systemd-socket-activate: resild serves the passed socket",
              repr(res))
    log = d.log()
    tap.check("another resild" not in log and "stale" not in log,
              "the passed socket is neither probed nor treated as stale")
    tap.check("as passed by systemd" in log,
              "the log says the socket came from systemd")
    rc = d.stop()
    tap.check(rc == 0, "exit 0 on SIGTERM when activated", "exit %r" % rc)
    tap.check(os.path.exists(d.sock) and os.stat(d.sock).st_ino == ino,
              "the socket systemd created is still there, same inode")


def passed_socket(tap, d, sock, env=None):
    """Run resild with sock as fd 3 and LISTEN_PID set to resild's pid."""
    os.set_inheritable(sock.fileno(), True)
    shell = ("exec 3<&%d; LISTEN_FDS=1 LISTEN_PID=$$ exec \"$@\""
             % sock.fileno())
    return spawn(tap, d, env, prefix=["/bin/sh", "-c", shell, "sh"],
                 pass_fds=(sock.fileno(),))


def t_activation_other_path(tap):
    d = rpcutil.Daemon({}, "actpath")
    other = os.path.join(d.dir, "systemd.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(other)
    s.listen(16)
    passed_socket(tap, d, s)
    s.close()  # the daemon holds its own copy
    c = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and d.proc.poll() is None:
        try:
            c = rpcutil.Conn(other)
            break
        except OSError:
            time.sleep(0.01)
    tap.check(c is not None and c.ok("ping") is not None,
              "passed socket at another path: served there")
    if c:
        c.close()
    tap.check(not os.path.exists(d.sock),
              "the -s path is not bound when a socket is passed")
    tap.check("not " + d.sock in d.log(),
              "the log says which socket is served instead of -s")
    rc = d.stop()
    tap.check(rc == 0 and os.path.exists(other),
              "exit 0, the passed socket left in place", "exit %r" % rc)


def t_activation_bad_fd(tap):
    for kind, make in (
            ("a datagram socket",
             lambda p: _bound(socket.SOCK_DGRAM, p, False)),
            ("a stream socket that does not listen",
             lambda p: _bound(socket.SOCK_STREAM, p, False))):
        d = rpcutil.Daemon({}, "actbad")
        s = make(os.path.join(d.dir, "x.sock"))
        passed_socket(tap, d, s)
        s.close()
        try:
            rc = d.proc.wait(10)
        except subprocess.TimeoutExpired:
            rc = None
        tap.check(rc == 1 and "socket activation" in d.log(),
                  "passed %s: refused, exit 1, with a message" % kind,
                  "exit %r" % rc)
        d.stop()


def _bound(kind, path, listen):
    s = socket.socket(socket.AF_UNIX, kind)
    s.bind(path)
    if listen:
        s.listen(1)
    return s


def t_activation_other_pid(tap):
    d = rpcutil.Daemon({}, "actpid")
    spawn(tap, d, {"LISTEN_FDS": "1", "LISTEN_PID": "1"})
    up = d.wait_ready()
    tap.check(up and ping_ok(d) is not None,
              "LISTEN_PID of another process: ignored, the daemon binds -s")
    tap.stop_daemon(d, "actpid")


# --- units ---------------------------------------------------------------

def installed_units(tmp):
    """make install into tmp/root; the unit directory, or None."""
    root = os.path.join(tmp, "root")
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS"):
        env.pop(k, None)
    r = subprocess.run(
        ["make", "-s", "--no-print-directory", "-C", ROOT,
         "BUILD=" + rpcutil.build_dir(), "DESTDIR=" + root, "PREFIX=/usr",
         "install"], env=env, capture_output=True, text=True, timeout=300)
    return root, r


def t_units(tap, tmp):
    if not have("systemd-analyze"):
        skip(tap, "systemd-analyze verify/security",
             "systemd-analyze not installed (Debian package systemd)")
        return
    src = os.path.join(ROOT, "systemd")
    dst = os.path.join(tmp, "units")
    os.mkdir(dst)
    # verify wants ExecStart= to exist: point it at the built daemon.
    with open(os.path.join(src, "resild.service")) as f:
        unit = f.read()
    unit = unit.replace("ExecStart=/usr/local/bin/resild",
                        "ExecStart=" + os.path.join(rpcutil.build_dir(),
                                                    "resild"))
    with open(os.path.join(dst, "resild.service"), "w") as f:
        f.write(unit)
    shutil.copy(os.path.join(src, "resild.socket"), dst)
    for k in ("Type=notify", "StateDirectory=resild", "LogsDirectory=resild",
              "ExecReload=/bin/kill -HUP $MAINPID", "WatchdogSec=",
              "LimitNOFILE="):
        tap.check(re.search("^" + re.escape(k), unit, re.M),
                  "resild.service has " + k)
    r = subprocess.run(["systemd-analyze", "verify", "resild.service",
                        "resild.socket"], cwd=dst, capture_output=True,
                       text=True, timeout=120)
    if r.returncode != 0 and "Failed to" in r.stderr and \
            "sysinit.target" in r.stderr:
        skip(tap, "systemd-analyze verify", "cannot load units here: " +
             r.stderr.strip().splitlines()[0])
    else:
        tap.check(r.returncode == 0 and not r.stderr.strip(),
                  "systemd-analyze verify resild.service resild.socket",
                  r.stdout + r.stderr)
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                        "resild.service"], cwd=dst, capture_output=True,
                       text=True, timeout=120)
    m = re.search(r"Overall exposure level for resild.service: ([0-9.]+)",
                  r.stdout)
    tap.check(m and float(m.group(1)) <= MAX_EXPOSURE,
              "systemd-analyze security --offline=yes: exposure %s <= %.1f"
              % (m.group(1) if m else "?", MAX_EXPOSURE),
              r.stdout[-2000:] + r.stderr)
    # The drop-in for Redis over TCP (systemd/redis-tcp.conf), applied.
    # --offline reads no drop-in directories: the unit is checked with the
    # drop-in's [Service] lines appended, which is what systemd merges.
    with open(os.path.join(src, "redis-tcp.conf")) as f:
        dropin = f.read()
    tcp = os.path.join(dst, "tcp")
    os.makedirs(tcp, exist_ok=True)
    with open(os.path.join(tcp, "resild.service"), "w") as f:
        f.write(unit + "\n" + dropin.split("[Service]", 1)[1])
    shutil.copy(os.path.join(src, "resild.socket"), tcp)
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                        "resild.service"], cwd=tcp, capture_output=True,
                       text=True, timeout=120)
    m = re.search(r"Overall exposure level for resild.service: ([0-9.]+)",
                  r.stdout)
    tap.check(m and float(m.group(1)) <= MAX_EXPOSURE_TCP and
              "AF_INET" in dropin and "PrivateNetwork=no" in dropin,
              "with the Redis TCP drop-in: exposure %s <= %.1f"
              % (m.group(1) if m else "?", MAX_EXPOSURE_TCP),
              r.stdout[-2000:] + r.stderr)


# --- make install --------------------------------------------------------

EXPECTED = [
    "usr/bin/resild", "usr/bin/resilctl", "usr/lib/libresil.a",
    "usr/lib/libresil.so.0.1.0", "usr/include/resil.h",
    "usr/lib/pkgconfig/resil.pc", "usr/lib/systemd/system/resild.service",
    "usr/lib/systemd/system/resild.socket", "usr/lib/sysusers.d/resild.conf",
    "usr/lib/tmpfiles.d/resild.conf", "usr/share/doc/resild/README.md",
    "usr/share/doc/resild/config.example.json",
    "usr/share/doc/resild/redis-tcp.conf", "etc/resild/config.json",
]
LINKS_SO = "usr/lib/libresil.so.0.1.0"
LINKS = {"usr/lib/libresil.so.0": "libresil.so.0.1.0",
         "usr/lib/libresil.so": "libresil.so.0"}


def t_sysusers_tmpfiles(tap, tmp, root):
    """The installed sysusers and tmpfiles entries, applied to a scratch
    root: user and group resild, /run/resild resild:resild 0750."""
    if not have("systemd-sysusers") or not have("systemd-tmpfiles"):
        skip(tap, "sysusers/tmpfiles entries", "systemd-sysusers or "
             "systemd-tmpfiles not installed (Debian package systemd)")
        return
    sysroot = os.path.join(tmp, "sysroot")
    for sub in ("usr/lib/sysusers.d", "usr/lib/tmpfiles.d"):
        os.makedirs(os.path.join(sysroot, sub))
        shutil.copy(os.path.join(root, sub, "resild.conf"),
                    os.path.join(sysroot, sub))
    os.makedirs(os.path.join(sysroot, "etc"))
    r = subprocess.run(["systemd-sysusers", "--root=" + sysroot],
                       capture_output=True, text=True, timeout=60)
    ids = None
    try:
        with open(os.path.join(sysroot, "etc/passwd")) as f:
            for line in f:
                p = line.split(":")
                if p[0] == "resild":
                    ids = (int(p[2]), int(p[3]))
    except OSError:
        pass
    tap.check(r.returncode == 0 and ids and ids[0] != 0,
              "systemd-sysusers: a system user and group resild",
              r.stdout + r.stderr)
    r = subprocess.run(["systemd-tmpfiles", "--root=" + sysroot, "--create",
                        "resild.conf"], capture_output=True, text=True,
                       timeout=60)
    try:
        st = os.stat(os.path.join(sysroot, "run/resild"))
        got = (st.st_uid, st.st_gid, st.st_mode & 0o7777)
    except OSError as e:
        got = repr(e)
    tap.check(r.returncode == 0 and ids and got == (ids[0], ids[1], 0o750),
              "systemd-tmpfiles: /run/resild resild:resild 0750",
              "%r\n%s" % (got, r.stdout + r.stderr))


def t_install(tap, tmp):
    root, r = installed_units(tmp)
    tap.check(r.returncode == 0, "make install DESTDIR=... PREFIX=/usr",
              r.stdout + r.stderr)
    missing = [p for p in EXPECTED
               if not os.path.isfile(os.path.join(root, p))]
    tap.check(not missing, "every expected file is installed",
              "missing: %r" % missing)
    bad = {p: t for p, t in LINKS.items()
           if not os.path.islink(os.path.join(root, p)) or
           os.readlink(os.path.join(root, p)) != t}
    tap.check(not bad, "soname links libresil.so -> .so.0 -> .so.0.1.0",
              repr(bad))
    unit = open(os.path.join(root, EXPECTED[6])).read()
    tap.check("ExecStart=/usr/bin/resild " in unit and "/usr/local" not in
              unit, "ExecStart rewritten for PREFIX=/usr")
    mode = os.stat(os.path.join(root, "usr/bin/resild")).st_mode & 0o777
    tap.check(mode == 0o755, "binaries are 0755", oct(mode))
    conf = os.path.join(root, "etc/resild/config.json")
    rc = subprocess.run([os.path.join(rpcutil.build_dir(), "resild"), "-t",
                         "-c", conf], capture_output=True, text=True)
    tap.check(rc.returncode == 0, "the example configuration is valid",
              rc.stdout + rc.stderr)
    # pkg-config finds resil.pc, and a program links and runs through it.
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(
        root, "usr/lib/pkgconfig"), PKG_CONFIG_SYSROOT_DIR=root)
    pc = subprocess.run(["pkg-config", "--cflags", "--libs", "resil"],
                        env=env, capture_output=True, text=True)
    prog = os.path.join(tmp, "hello.c")
    with open(prog, "w") as f:
        f.write('#include <resil.h>\n#include <stdio.h>\n'
                'int main(void){resil_t *r = resil_open("/nonexistent");'
                'resil_close(r); puts("linked"); return 0;}\n')
    exe = os.path.join(tmp, "hello")
    # Under `make asan` the library is instrumented: so must the program be.
    nm = subprocess.run(["nm", "-D", os.path.join(root, LINKS_SO)],
                        capture_output=True, text=True)
    san = ["-fsanitize=address,undefined"] if "__asan" in nm.stdout else []
    cc = subprocess.run(["cc", "-o", exe, prog] + san + pc.stdout.split(),
                        env=env, capture_output=True, text=True)
    run = subprocess.run([exe], capture_output=True, text=True,
                         env=dict(os.environ, LD_LIBRARY_PATH=os.path.join(
                             root, "usr/lib"))) if cc.returncode == 0 \
        else None
    tap.check(pc.returncode == 0 and cc.returncode == 0 and run and
              run.stdout.strip() == "linked",
              "pkg-config resil: a client compiles, links to libresil.so.0 "
              "and runs", pc.stdout + pc.stderr + cc.stderr)
    t_sysusers_tmpfiles(tap, tmp, root)
    # A second install keeps an edited configuration.
    with open(conf, "w") as f:
        f.write('{"max_clients": 7}\n')
    _, r = installed_units(tmp)
    tap.check(r.returncode == 0 and
              open(conf).read() == '{"max_clients": 7}\n',
              "make install again: the edited config.json is not "
              "overwritten", r.stdout + r.stderr)
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS"):
        env.pop(k, None)
    r = subprocess.run(["make", "-s", "--no-print-directory", "-C", ROOT,
                        "DESTDIR=" + root, "PREFIX=/usr", "uninstall"],
                       env=env, capture_output=True, text=True, timeout=120)
    left = []
    for dp, _, files in os.walk(root):
        left += [os.path.relpath(os.path.join(dp, f), root) for f in files]
    tap.check(r.returncode == 0 and left == ["etc/resild/config.json"],
              "make uninstall removes everything but the edited config",
              "left: %r\n%s" % (left, r.stdout + r.stderr))
    os.unlink(conf)
    _, r = installed_units(tmp)
    r = subprocess.run(["make", "-s", "--no-print-directory", "-C", ROOT,
                        "DESTDIR=" + root, "PREFIX=/usr", "uninstall"],
                       env=env, capture_output=True, text=True, timeout=120)
    left = []
    for dp, _, files in os.walk(root):
        left += [os.path.relpath(os.path.join(dp, f), root) for f in files]
    tap.check(r.returncode == 0 and not left,
              "make uninstall removes the untouched example config too",
              "left: %r" % left)


def main():
    tap = rpcutil.Tap()
    tmp = tempfile.mkdtemp(prefix="resild-systemd.")
    try:
        tap.run("ready after listen", t_ready_after_listen, tap)
        tap.run("watchdog", t_watchdog, tap)
        tap.run("watchdog other pid", t_watchdog_other_pid, tap)
        tap.run("reload", t_reload, tap)
        tap.run("bad NOTIFY_SOCKET", t_no_notify_socket, tap)
        tap.run("activation", t_activation, tap)
        tap.run("activation other path", t_activation_other_path, tap)
        tap.run("activation bad fd", t_activation_bad_fd, tap)
        tap.run("activation other pid", t_activation_other_pid, tap)
        tap.run("units", t_units, tap, tmp)
        tap.run("install", t_install, tap, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tap.finish()


if __name__ == "__main__":
    main()
