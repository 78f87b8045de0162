"""redisutil.py - harness for the end-to-end Redis tests of resild
(issue 13, SPEC §7): real redis-server processes, real daemons, no mocks.

  Redis     a Debian /usr/bin/redis-server in its own temporary directory,
            on a Unix socket and/or a TCP port on 127.0.0.1, with
            `--save '' --appendonly no`; start (waits until it answers
            PING, polling every 10 ms, bounded), stop (SIGTERM), kill
            (SIGKILL), pause (SIGSTOP), resume (SIGCONT), restart on the
            same address.  A sentinel is the same class with a config file.
  resp      a tiny RESP2 client over one socket: call(addr, *args) opens a
            connection, sends one command and returns the reply (bytes,
            int, list, None; an error reply comes back as a RespError
            value, a dead server raises OSError).
  RTap      rpcutil.Tap that also owns the Redis servers: they are killed
            at the end, on SIGTERM (run.sh's timeout) and at exit, and
            their logs are shown when a test failed.  start_resild() runs a
            daemon with its snapshot in its own temporary directory.
  poll      wait for a condition with a deadline (never a bare sleep for
            synchronisation).

Redis children get PR_SET_PDEATHSIG so a test killed hard leaves none.
"""
import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import promcheck  # noqa: E402
import rpcutil  # noqa: E402

REDIS_SERVER = "/usr/bin/redis-server"
POLL_S = 0.010           # poll period of every wait here
REDIS_READY_S = 10.0     # how long redis-server may take to answer PING
REDIS_STOP_S = 5.0       # SIGTERM grace before SIGKILL


# In a child: die with the test (PR_SET_PDEATHSIG), as rpcutil's daemons do.
_pdeathsig = rpcutil.die_with_parent


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (bind port 0)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def poll(fn, timeout, step=POLL_S):
    """Call fn every step s until it returns something true or timeout s
    pass.  Returns (value, elapsed_s): value is fn's true answer, or None
    on timeout.  An exception from fn counts as false (a daemon or a
    server may be restarting)."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        try:
            v = fn()
        except (OSError, rpcutil.Closed, TimeoutError, RespError):
            v = None
        if v:
            return v, time.monotonic() - t0
        if time.monotonic() >= deadline:
            return None, time.monotonic() - t0
        time.sleep(step)


# --- RESP ------------------------------------------------------------------

class RespError(Exception):
    """An error reply (-ERR ...).  Returned by call(), raised by check()."""


def _encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RespConn:
    """One connection to a Redis server or sentinel.  addr: a Unix socket
    path (starts with '/'), or 'host:port', or (host, port)."""

    def __init__(self, addr, timeout=2.0):
        if isinstance(addr, str) and addr.startswith("/"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target = addr
        else:
            if isinstance(addr, str):
                host, port = addr.rsplit(":", 1)
                addr = (host, int(port))
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            target = addr
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(target)
        except OSError:
            self.sock.close()
            raise
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, *args):
        self.sock.sendall(_encode(args))

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionResetError("redis closed the connection")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read(self):
        """One reply.  Raises socket.timeout when none comes in time."""
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest
        if t == b"-":
            return RespError(rest.decode("utf-8", "replace"))
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ValueError("not RESP: %r" % line[:80])

    def call(self, *args):
        self.send(*args)
        return self.read()


def call(addr, *args, timeout=2.0):
    """One command on a fresh connection; the reply (RespError for an
    error reply).  OSError / socket.timeout when the server is not there
    or does not answer."""
    c = RespConn(addr, timeout)
    try:
        return c.call(*args)
    finally:
        c.close()


def check(addr, *args, timeout=2.0):
    """call(), raising RespError for an error reply."""
    r = call(addr, *args, timeout=timeout)
    if isinstance(r, RespError):
        raise r
    return r


def info(addr, section, timeout=2.0):
    """INFO section as a dict of str."""
    text = check(addr, "INFO", section, timeout=timeout).decode()
    out = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v
    return out


# --- servers ---------------------------------------------------------------

class Redis:
    """One redis-server (or sentinel) in a temporary directory.

    unix=True: listens on <dir>/redis.sock (or the path given as `sock`,
    kept across restarts); port: also (or only, with unix=False) on
    127.0.0.1:port.  extra: more command-line arguments (e.g.
    ["--replicaof", "127.0.0.1", "6380"]).  sentinel_conf: a text; the
    server then runs `redis-server <dir>/sentinel.conf --sentinel`."""

    def __init__(self, name="redis", unix=True, port=None, sock=None,
                 extra=None, sentinel_conf=None, password=None):
        self.name = name
        self.password = password  # --requirepass; ping and call AUTH first
        self.dir = tempfile.mkdtemp(prefix="resild-" + name + ".")
        self.sock = (sock or os.path.join(self.dir, "redis.sock")) \
            if unix else None
        self.port = port
        self.extra = list(extra or [])
        self.sentinel_conf = sentinel_conf
        self.proc = None
        self.starts = 0
        self.log_path = os.path.join(self.dir, "redis.log")

    @property
    def addr(self):
        """Where the test talks to it: the socket, else host:port."""
        return self.sock if self.sock else "127.0.0.1:%d" % self.port

    @property
    def url(self):
        """What a daemon's redis.url says."""
        if self.sock:
            return "unix://" + self.sock
        return "tcp://127.0.0.1:%d" % self.port

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def argv(self):
        if self.sentinel_conf is not None:
            conf = os.path.join(self.dir, "sentinel.conf")
            with open(conf, "w") as f:  # sentinel rewrites it: fresh each start
                f.write(self.sentinel_conf)
            return [REDIS_SERVER, conf, "--sentinel",
                    "--logfile", self.log_path]
        a = [REDIS_SERVER, "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--logfile", self.log_path,
             "--daemonize", "no", "--databases", "16",
             "--repl-diskless-sync-delay", "0"]  # a replica syncs at once
        if self.port:
            a += ["--port", str(self.port), "--bind", "127.0.0.1",
                  "--protected-mode", "no"]
        else:
            a += ["--port", "0"]
        if self.sock:
            a += ["--unixsocket", self.sock, "--unixsocketperm", "700"]
        if self.password:
            a += ["--requirepass", self.password]
        return a + self.extra

    def start(self, wait=True):
        """Spawn (again, on the same address).  With wait, poll PING until
        it answers (10 ms steps, at most 10 s).  True if it answers."""
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(b"--- start %d ---\n" % self.starts)
            log.flush()
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                stderr=log, close_fds=True, preexec_fn=_pdeathsig,
                cwd=self.dir)
        return self.wait_ready() if wait else True

    def ping(self, timeout=0.5):
        return self.call("PING", timeout=timeout) == b"PONG"

    def wait_ready(self, timeout=REDIS_READY_S):
        def up():
            if self.proc.poll() is not None:
                raise ChildProcessError("redis-server exited %r"
                                        % self.proc.returncode)
            return self.ping()
        try:
            return poll(up, timeout)[0] is not None
        except ChildProcessError:
            return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def pause(self):
        """SIGSTOP: the socket stays, connects are queued, nothing answers."""
        self.signal(signal.SIGSTOP)

    def resume(self):
        self.signal(signal.SIGCONT)

    def kill(self):
        """SIGKILL (works on a stopped process too) and reap.  The socket
        file stays behind, as after a crash."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode

    def stop(self):
        """SIGTERM (after SIGCONT), SIGKILL after 5 s; reaped."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(REDIS_STOP_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def call(self, *args, timeout=2.0, db=None):
        """One command on a fresh connection (AUTH and SELECT db first
        when there is a password or a db)."""
        c = RespConn(self.addr, timeout)
        try:
            if self.password:
                r = c.call("AUTH", self.password)
                if isinstance(r, RespError):
                    return r
            if db is not None:
                r = c.call("SELECT", str(db))
                if isinstance(r, RespError):
                    return r
            return c.call(*args)
        finally:
            c.close()

    def log(self):
        return rpcutil.read_log(self.log_path)

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def sentinel_conf(port, master_port, workdir, down_after_ms=1000,
                  failover_ms=5000, name="mymaster"):
    return ("port %d\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\n"
            "dir %s\nsentinel resolve-hostnames no\n"
            "sentinel monitor %s 127.0.0.1 %d 1\n"
            "sentinel down-after-milliseconds %s %d\n"
            "sentinel failover-timeout %s %d\n"
            % (port, workdir, name, master_port, name, down_after_ms,
               name, failover_ms))


# --- the tap ---------------------------------------------------------------

class RTap(rpcutil.Tap):
    """rpcutil.Tap that also owns Redis servers and cleans up on SIGTERM."""

    def __init__(self):
        super().__init__()
        self.redises = []
        self.redis_implicated = set()
        atexit.register(self._cleanup)
        signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, signum, frame):
        print("# SIGTERM: cleaning up", flush=True)
        raise SystemExit(1)

    def _cleanup(self):
        for r in self.redises:
            r.cleanup()
        for d in self.daemons:
            try:
                d.cleanup()
            except Exception:
                pass

    def check(self, cond, name, *diag):
        ok = super().check(cond, name, *diag)
        if not ok:
            self.redis_implicated.update(self.redises)
        return ok

    def redis(self, name="redis", start=True, **kw):
        """A Redis (see the class), started unless start=False; a failed
        start is a failed test point and None."""
        r = Redis(name, **kw)
        self.redises.append(r)
        if not start:
            return r
        up = r.start()
        self.check(up, "%s: redis-server starts and answers PING" % name,
                   r.log()[-2000:])
        return r if up else None

    def start_resild(self, config, name="resild"):
        """A daemon whose snapshot lives in its own temporary directory
        (config["snapshot"]["path"] is set here); None if it did not come
        up (a failed test point)."""
        d = rpcutil.Daemon(config, name)
        d.config = dict(config)
        d.config["snapshot"] = dict(config.get("snapshot", {}),
                                    path=os.path.join(d.dir, "state.snap"))
        self.daemons.append(d)
        up = d.start()
        if not up:
            self.implicated.add(d)
        self.check(up, "%s: daemon starts and accepts connections" % name,
                   "binary: %s" % d.binary, d.log()[-3000:])
        return d if up else None

    def finish(self):
        for r in self.redises:
            if r in self.redis_implicated:
                lines = r.log().splitlines()
                self.diag("--- %s (%s) log, last lines of %d ---"
                          % (r.name, r.log_path, len(lines)))
                self.diag("\n".join(lines[-25:]))
        for r in self.redises:
            r.cleanup()
        super().finish()


# --- daemon-side helpers -----------------------------------------------------

def redis_cfg(server, mode, prefix, origin, **kw):
    """A daemon's "redis" section for server (a Redis), with the short
    timeouts the tests rely on."""
    c = {"url": server.url, "mode": mode, "prefix": prefix,
         "origin": origin, "connect_timeout_ms": 500,
         "command_timeout_ms": 500}
    c.update(kw)
    return c


def redis_component(conn):
    """health.components.redis (a dict with ok and detail) or None."""
    return conn.ok("health").get("components", {}).get("redis")


def redis_ok(conn):
    """True when the daemon says Redis is fine."""
    c = redis_component(conn)
    return bool(c and c.get("ok") is True)


def redis_not_ok(conn):
    c = redis_component(conn)
    return c if (c and c.get("ok") is False) else None


def key_status(conn, key):
    """The key's status map, or None when the daemon has no such key."""
    keys = conn.ok("status", {"key": key})["keys"]
    for k in keys:
        if k.get("key") == key:
            return k
    return None


def key_state(conn, key):
    st = key_status(conn, key)
    return st["state"] if st else None


def state_is(conn, key, *states):
    """Status map when the key is in one of states, else None."""
    st = key_status(conn, key)
    return st if st and st["state"] in states else None


def trip(conn, key, n, cls="network.reset"):
    """n failure reports without permits (enough to open a breaker whose
    failure_threshold is n)."""
    for _ in range(n):
        conn.ok("report", {"key": key, "outcome": "failure",
                           "error": {"class": cls}})


def metrics(conn):
    """The metrics page parsed by promcheck (families by name)."""
    return promcheck.parse(conn.ok("metrics")["text"])


def metric(conn, name, default=None):
    """One unlabelled sample's value from the metrics page."""
    fams = metrics(conn)
    f = fams.get(name)
    if not f or not f.samples:
        return default
    return f.samples[0][2]


def transitions(events, key=None):
    return [e for e in events if e.get("type") == "transition" and
            (key is None or e.get("key") == key)]


def pct(xs, p):
    """p-th percentile (nearest rank) of a list; 0 for an empty one."""
    if not xs:
        return 0.0
    s = sorted(xs)
    i = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[i]
