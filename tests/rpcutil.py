"""rpcutil.py - shared harness for the Python tests of resild.

Plain Python 3 plus Debian's python3-msgpack (1.0.x): nothing of ours is
imported, so these tests talk to the daemon exactly as a foreign
MessagePack-RPC client would.

  Daemon  runs a real build/resild in its own temporary directory
          (socket, config.json, resild.log), waits for readiness by polling
          connect() every 10 ms for at most 10 s (never a bare sleep) and
          stops it with SIGTERM (SIGKILL after 10 s).
  Conn    one client connection: pack requests, read responses through a
          streaming msgpack.Unpacker and match them by msgid (responses may
          come out of order), detect the daemon closing the connection.
  Tap     TAP output ("ok N - name", "not ok N - name", "1..N" at the end)
          for tests/run.sh; a test function that raises counts as not ok.

The binary is $BUILD/resild, BUILD defaulting to "build" (relative to the
current directory, else to the repository root).
"""

import ctypes
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

import msgpack

POLL_S = 0.010          # readiness poll period
READY_TIMEOUT_S = 10.0  # how long the daemon may take to listen
STOP_TIMEOUT_S = 10.0   # SIGTERM grace before SIGKILL
LOG_TAIL = 60           # daemon log lines shown for a failed test


def build_dir():
    """Directory holding resild and resilctl."""
    b = os.environ.get("BUILD", "build")
    if os.path.isabs(b) or os.path.isdir(b):
        return os.path.abspath(b)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(root, b)


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def request_bytes(msgid, method, params=None):
    """One request frame.  params: None (no arguments) or a dict."""
    return pack([0, msgid, method, [] if params is None else [params]])


class Closed(Exception):
    """The daemon closed the connection (EOF or reset)."""


def read_log(path):
    """A server's log as text ("" when there is none)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def die_with_parent():
    """In a child: die with the test (PR_SET_PDEATHSIG = 1), so a test
    killed by its time-out leaves no daemon spinning behind it."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except Exception:
        pass


class Daemon:
    """A resild in a temporary directory.  Use start() then stop()."""

    def __init__(self, config=None, name="resild"):
        self.config = {} if config is None else config
        self.dir = tempfile.mkdtemp(prefix=name + ".")
        self.sock = os.path.join(self.dir, "resild.sock")
        self.config_path = os.path.join(self.dir, "config.json")
        self.log_path = os.path.join(self.dir, "resild.log")
        self.proc = None
        self.binary = os.path.join(build_dir(), "resild")

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self):
        """Spawn and wait until the socket accepts.  Returns True if ready."""
        with open(self.config_path, "w") as f:
            json.dump(self.config, f)
        if not os.access(self.binary, os.X_OK):
            with open(self.log_path, "w") as f:
                f.write("no executable at %s\n" % self.binary)
            return False
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-s", self.sock, "-c", self.config_path],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                close_fds=True, preexec_fn=die_with_parent)
        return self.wait_ready()

    def wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.sock)
                return True
            except OSError:
                pass
            finally:
                s.close()
            time.sleep(POLL_S)
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """SIGTERM, wait up to 10 s, else SIGKILL.  Returns the exit code
        (negative: killed by that signal), or None if it never ran."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def rss_kib(self):
        """Resident set size from /proc/PID/status, in KiB."""
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS for pid %d" % self.pid)

    def log(self):
        return read_log(self.log_path)

    def cleanup(self):
        if self.alive():
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def connect(self, timeout=5.0):
        return Conn(self.sock, timeout)


class Conn:
    """One client connection speaking raw MessagePack-RPC."""

    def __init__(self, path, timeout=5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.sock.settimeout(None)
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.responses = {}   # msgid -> (error, result), not yet claimed
        self.others = []      # anything that is not a well-formed response
        self.next_id = 1
        self.eof = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method, params=None, msgid=None):
        """Send one request; returns its msgid."""
        if msgid is None:
            msgid = self.next_id
            self.next_id += 1
        self.send(request_bytes(msgid, method, params))
        return msgid

    def _pump(self, timeout):
        """Read what is available within timeout and unpack it.
        Returns False on timeout; raises Closed on EOF or reset."""
        if self.eof:
            raise Closed()
        r, _, _ = select.select([self.sock], [], [], max(timeout, 0))
        if not r:
            return False
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            raise Closed()
        self.unpacker.feed(data)
        for msg in self.unpacker:
            if (isinstance(msg, list) and len(msg) == 4 and msg[0] == 1
                    and isinstance(msg[1], int)):
                self.responses[msg[1]] = (msg[2], msg[3])
            else:
                self.others.append(msg)
        return True

    def wait(self, msgid, timeout=5.0):
        """(error, result) of the response to msgid.  Raises TimeoutError
        or Closed."""
        deadline = time.monotonic() + timeout
        while msgid not in self.responses:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no response to msgid %d in %.1f s"
                                   % (msgid, timeout))
            self._pump(left)
        return self.responses.pop(msgid)

    def call(self, method, params=None, timeout=5.0):
        return self.wait(self.request(method, params), timeout)

    def ok(self, method, params=None, timeout=5.0):
        """Call and return the result; raise if the daemon answered an
        error."""
        err, res = self.call(method, params, timeout)
        if err is not None:
            raise RuntimeError("%s answered error %r" % (method, err))
        return res

    def events(self, timeout=2.0, until=None):
        """The event maps of [2, "event", [map]] notifications that arrive
        within timeout s, in order; returns early once until(ev) is true
        for one of them (it is included).  Other messages stay in
        self.others."""
        got, keep = [], []
        deadline = time.monotonic() + timeout
        try:
            while True:
                while self.others:
                    m = self.others.pop(0)
                    if (isinstance(m, list) and len(m) == 3 and m[0] == 2
                            and m[1] == "event" and m[2]):
                        got.append(m[2][0])
                        if until and until(got[-1]):
                            return got
                    else:
                        keep.append(m)
                left = deadline - time.monotonic()
                if left <= 0:
                    return got
                self._pump(min(left, 0.05))
        except Closed:
            return got
        finally:
            self.others[:0] = keep

    def wait_closed(self, timeout=5.0):
        """Read until the daemon closes the connection.  Returns True if it
        did within timeout (responses seen meanwhile stay in
        self.responses)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._pump(left)
        except Closed:
            return True


class Tap:
    """TAP producer.  check() records one test point."""

    def __init__(self):
        self.n = 0
        self.failed = 0
        self.daemons = []   # every daemon started, cleaned up at the end
        self.implicated = set()  # daemons up when a test failed: show logs

    def check(self, cond, name, *diag):
        self.n += 1
        if cond:
            print("ok %d - %s" % (self.n, name), flush=True)
        else:
            self.failed += 1
            # Whichever daemons are up now may explain the failure.
            self.implicated.update(d for d in self.daemons if d.alive())
            print("not ok %d - %s" % (self.n, name), flush=True)
            for d in diag:
                self.diag(d)
        return bool(cond)

    @staticmethod
    def diag(text):
        for line in str(text).splitlines() or [""]:
            print("# " + line, flush=True)

    def dump_log(self, d):
        """Show a daemon's log: all of it when short, else its warnings and
        errors and its last lines (a test may have logged thousands)."""
        lines = d.log().splitlines()
        if len(lines) > LOG_TAIL:
            bad = [l for l in lines if " warn: " in l or " error: " in l]
            shown = bad[:LOG_TAIL - 10] + ["..."] + lines[-10:]
            what = "warnings/errors and the last lines of %d" % len(lines)
        else:
            shown, what = lines, "%d lines" % len(lines)
        self.diag("--- %s (pid %s): %s ---" % (d.log_path, d.pid, what))
        self.diag("\n".join(l if len(l) <= 200 else l[:200] + "..."
                             for l in shown))

    def run(self, name, fn, *args):
        """Run fn(*args); an exception is one failed test point."""
        try:
            fn(*args)
        except Exception:
            self.check(False, name + " (raised)", traceback.format_exc())

    def finish(self):
        """Print the plan and, on failure, the daemons' logs; exit."""
        for d in self.daemons:
            if d in self.implicated:
                self.dump_log(d)
        for d in self.daemons:
            d.cleanup()
        print("1..%d" % self.n, flush=True)
        sys.exit(1 if self.failed else 0)

    def start_daemon(self, config=None, name="resild"):
        """Start a daemon and record a test point for it; None if it did
        not come up."""
        d = Daemon(config, name)
        self.daemons.append(d)
        up = d.start()
        if not up:
            self.implicated.add(d)
        self.check(up, "%s: daemon starts and accepts connections" % name,
                   "binary: %s" % d.binary)
        return d if up else None

    def stop_daemon(self, d, name="resild"):
        rc = d.stop()
        if rc != 0:
            self.implicated.add(d)
        self.check(rc == 0, "%s: daemon exits 0 on SIGTERM" % name,
                   "exit code: %r" % rc)


def is_error(err, code):
    return isinstance(err, dict) and err.get("code") == code


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


# A script for `python3 -c`, to run as another uid or with other groups
# (subprocess user=/group=): argv[1] is the socket, argv[2] a JSON list of
# [method, params].  It sends each request on one connection and prints one
# JSON line [msgid, error] per answer, or "closed" when the daemon closes
# first.
PEER_CHILD = r"""
import json, socket, sys, msgpack
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(sys.argv[1])
reqs = json.loads(sys.argv[2])
try:
    for i, (m, p) in enumerate(reqs):
        s.sendall(msgpack.packb([0, i + 1, m, [p] if p else []]))
except OSError:
    pass
u = msgpack.Unpacker(raw=False)
want = set(range(1, len(reqs) + 1))
while want:
    try:
        data = s.recv(65536)
    except OSError:
        data = b""
    if not data:
        print("closed")
        break
    u.feed(data)
    for o in u:
        print(json.dumps([o[1], o[2]]))
        want.discard(o[1])
"""
