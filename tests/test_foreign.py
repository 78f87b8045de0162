#!/usr/bin/python3
"""test_foreign.py - resild with foreign MessagePack-RPC clients from Debian
(issue 8, defect 8; SPEC §3).

  pynvim (python3-pynvim): its msgpack_rpc session opens every connection
      with the notification [2, bin "nvim_set_client_info", [...]]; the
      daemon used to close the connection on it (bin name, and any
      notification), so every later request failed.  Through the session:
      requests are answered, an error answer stays an error, a 'report'
      sent as a notification (async_=True) takes effect.
  nvim --headless (neovim): sockconnect(..., {'rpc': v:true}), rpcrequest
      and rpcnotify.  rpcnotify(ch, 'report', ...) used to drop the
      channel and its permits.
  raw frames (python3-msgpack): the exact pynvim greeting, bin method
      names, notifications of known and unknown methods, with positional
      params: nothing comes back for a notification and the connection
      stays.

pynvim and nvim run in child processes under a timeout, so a client that
hangs on a dropped connection fails a test instead of the run.  When a
package is missing (scripts/deps.sh installs both) its checks print
`ok N # SKIP`.  TAP on stdout; exit 1 if anything failed.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rpcutil  # noqa: E402

CHILD_TIMEOUT_S = 30
CONFIG = {"policies": {"*": {"breaker": {"failure_threshold": 100}}}}

# The pynvim child: one session, each step's outcome as one JSON line.
PYNVIM_CHILD = textwrap.dedent(r'''
    import json, sys
    from pynvim.msgpack_rpc import socket_session

    out = {}
    s = socket_session(sys.argv[1])     # sends the bin-named greeting
    s.error_wrapper = lambda e: RuntimeError(repr(e))  # Nvim.from_session's
    def step(name, fn):
        try:
            out[name] = {"ok": fn()}
        except Exception as e:
            out[name] = {"error": "%s: %s" % (type(e).__name__, e)}
    step("ping", lambda: s.request("ping", {}))
    step("acquire", lambda: s.request("acquire", {"key": "py.k"}))
    permit = (out["acquire"].get("ok") or {}).get("permit", 0)
    step("report_notify", lambda: s.request(
        "report", {"key": "py.k", "permit": permit, "outcome": "failure",
                   "error": {"class": "py.test"}}, async_=True))
    step("unknown_notify", lambda: s.request("no_such", {}, async_=True))
    step("unknown_request", lambda: s.request("no_such", {}))
    step("status", lambda: s.request("status", {"key": "py.k"}))
    s.close()
    print(json.dumps(out, default=repr))
''')

# The nvim script: results written to $OUT, one "name json" per line.
NVIM_SCRIPT = textwrap.dedent(r'''
    let out = []
    try
      let ch = sockconnect('pipe', $SOCK, {'rpc': v:true})
      call add(out, 'connected ' . json_encode(ch))
      call add(out, 'ping ' . json_encode(rpcrequest(ch, 'ping', {})))
      let a = rpcrequest(ch, 'acquire', {'key': 'nv.k'})
      call add(out, 'acquire ' . json_encode(a))
      call rpcnotify(ch, 'report', {'key': 'nv.k', 'permit': a.permit,
            \ 'outcome': 'failure', 'error': {'class': 'nv.test'}})
      call rpcnotify(ch, 'nvim_no_such_method', {'x': 1})
      call add(out, 'status ' . json_encode(rpcrequest(ch, 'status',
            \ {'key': 'nv.k'})))
      call chanclose(ch)
    catch
      call add(out, 'error ' . json_encode(v:exception))
    endtry
    call writefile(out, $OUT)
    qall!
''')


def key_status(res):
    keys = (res or {}).get("keys") or [{}]
    return keys[0]


def t_raw(tap, d):
    """Frames as foreign clients send them, over a plain socket."""
    greeting = rpcutil.pack([2, b"nvim_set_client_info",
                             ["python3-client", {"major": 0}, "remote", {},
                              {}]])
    c = d.connect()
    c.send(greeting)
    err, res = c.call("ping", timeout=5.0)
    tap.check(err is None and isinstance(res, dict) and "pid" in res,
              "raw: pynvim's bin-named greeting keeps the connection; ping "
              "answered", "error=%r result=%r" % (err, res))
    c.send(rpcutil.pack([0, 900, b"acquire", [{"key": "raw.k"}]]))
    err, res = c.wait(900)
    tap.check(err is None and (res or {}).get("allow") is True,
              "raw: a request whose method name is bin is answered",
              "error=%r result=%r" % (err, res))
    permit = (res or {}).get("permit", 0)
    # Notifications: a known method with named params (bin name), a known
    # one with positional params, an unknown one.  None is answered.
    c.send(rpcutil.pack([2, b"report", [{"key": "raw.k", "permit": permit,
                                         "outcome": "failure"}]]) +
           rpcutil.pack([2, "ping", ["positional"]]) +
           rpcutil.pack([2, "no_such_method", [{"a": 1}]]))
    err, res = c.call("status", {"key": "raw.k"})
    k = key_status(res)
    tap.check(err is None and k.get("failures") == 1 and
              k.get("outstanding") == 0,
              "raw: a 'report' notification takes effect (failure counted, "
              "permit released)", "error=%r status=%r" % (err, k))
    tap.check(not c.others and not c.responses,
              "raw: nothing is sent back for notifications",
              "others=%r responses=%r" % (c.others, c.responses))
    c.close()
    # A malformed notification still closes, and the log names what is
    # wrong with it (12d), not the frame shape.
    c = d.connect()
    c.send(rpcutil.pack([2, 5, []]))
    closed = c.wait_closed(5.0)
    c.close()
    tap.check(closed and "notification method is neither str nor bin"
              in d.log(),
              "raw: a notification named by an integer is refused, and the "
              "log says why", "closed=%r" % closed)


def t_pynvim(tap, d):
    try:
        import pynvim  # noqa: F401
    except ImportError:
        for what in ("greeting", "requests", "report notification",
                     "errors"):
            tap.n += 1
            print("ok %d # SKIP pynvim %s: python3-pynvim is not installed "
                  "(scripts/deps.sh installs it)" % (tap.n, what), flush=True)
        return
    p = subprocess.run([sys.executable, "-c", PYNVIM_CHILD, d.sock],
                       stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=CHILD_TIMEOUT_S)
    out = {}
    try:
        out = json.loads(p.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        pass
    diag = "exit %r, stdout %r, stderr %r" % (p.returncode, p.stdout[-400:],
                                              p.stderr[-400:])
    ping = out.get("ping", {}).get("ok")
    tap.check(isinstance(ping, dict) and ping.get("pid") == d.pid,
              "pynvim: its greeting does not drop the session; ping answered",
              diag)
    acq = out.get("acquire", {}).get("ok") or {}
    tap.check(acq.get("allow") is True and acq.get("permit"),
              "pynvim: acquire answered with a permit", diag)
    k = key_status(out.get("status", {}).get("ok"))
    tap.check(k.get("failures") == 1 and k.get("outstanding") == 0,
              "pynvim: report as a notification (async_=True) takes effect, "
              "the session survives", "status %r; %s" % (k, diag))
    err = out.get("unknown_request", {}).get("error", "")
    tap.check("no_such_method" in err,
              "pynvim: an unknown request is an error answer, an unknown "
              "notification is ignored", diag)


def t_nvim(tap, d):
    nvim = shutil.which("nvim")
    if not nvim:
        for what in ("requests", "rpcnotify report"):
            tap.n += 1
            print("ok %d # SKIP nvim %s: neovim is not installed "
                  "(scripts/deps.sh installs it)" % (tap.n, what), flush=True)
        return
    script = os.path.join(d.dir, "client.vim")
    out_path = os.path.join(d.dir, "nvim.out")
    with open(script, "w") as f:
        f.write(NVIM_SCRIPT)
    env = dict(os.environ, SOCK=d.sock, OUT=out_path, HOME=d.dir,
               XDG_STATE_HOME=d.dir, XDG_DATA_HOME=d.dir)
    p = subprocess.run([nvim, "--headless", "--clean", "-u", "NONE", "-i",
                        "NONE", "-n", "-S", script],
                       stdin=subprocess.DEVNULL, capture_output=True,
                       env=env, timeout=CHILD_TIMEOUT_S)
    res = {}
    try:
        with open(out_path) as f:
            for line in f:
                name, _, val = line.strip().partition(" ")
                res[name] = json.loads(val)
    except (OSError, ValueError):
        pass
    diag = "exit %r, results %r, stderr %r" % (p.returncode, res,
                                               p.stderr[-400:])
    ping = res.get("ping") or {}
    acq = res.get("acquire") or {}
    tap.check(ping.get("pid") == d.pid and acq.get("allow") is True,
              "nvim --headless: rpcrequest ping and acquire answered", diag)
    k = key_status(res.get("status"))
    tap.check("error" not in res and k.get("failures") == 1 and
              k.get("outstanding") == 0,
              "nvim --headless: rpcnotify(ch, 'report', ...) takes effect and "
              "the channel survives (and an unknown rpcnotify)", diag)


def main():
    tap = rpcutil.Tap()
    d = tap.start_daemon(CONFIG, "foreign")
    if d:
        tap.run("raw foreign frames", t_raw, tap, d)
        tap.run("pynvim session", t_pynvim, tap, d)
        tap.run("nvim --headless", t_nvim, tap, d)
        tap.check(d.alive(), "foreign: daemon still running")
        tap.stop_daemon(d, "foreign")
    tap.finish()


if __name__ == "__main__":
    main()
