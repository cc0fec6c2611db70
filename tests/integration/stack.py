"""A throwaway threatfeed stack for integration/browser tests and benchmarks.

Python 3 standard library only.  One Stack = a fresh state dir (under
build/test-tmp/), the TAXII test upstream (tests/upstream/upstream.py), the
FastCGI handler, and a web server configured with the files in deploy/:

    from stack import Stack
    with Stack("lighttpd", conf={"api_token": "t0k"}) as s:
        status, headers, body = s.request("GET", "/api/health",
                                          headers={"Authorization": "Bearer t0k"})
        s.cli("feed", "list")

server:
  "lighttpd"      lighttpd -D -f deploy/lighttpd/threatfeed.conf (TF_* env),
                  lighttpd spawns the handler (bin-path, fcgi_procs processes)
  "nginx"         spawn-fcgi -n (one handler process on a unix socket) + nginx
                  with a generated nginx.conf including deploy/nginx/threatfeed.conf
                  (its listen/root/fastcgi_pass lines substituted)
  "apache"        spawn-fcgi -n + apache2 -DFOREGROUND with a generated httpd.conf
                  that Defines TF_LISTEN/TF_WWW/TF_SOCKET and includes
                  deploy/apache/threatfeed.conf (mod_proxy_fcgi)
  "apache-fcgid"  apache2 + mod_fcgid serving a generated document root: a copy of
                  www/, deploy/apache/fcgid/.htaccess, and api/threatfeed.fcgi made
                  from deploy/apache/fcgid/threatfeed.fcgi.sh (the shared-hosting
                  wrapper); mounted at `prefix` (default "/~tester/tf") via Alias.

When run as root, the Apache stacks run the handler, its workers and cli() as
www-data (Apache refuses to serve as root); the state dir is chowned to it.

Every process the stack starts is in its own process group, gets SIGTERM if
the process that called start() dies (PR_SET_PDEATHSIG; note: tied to the
*thread* that called start()), and is stopped by stop(), which is also
registered with atexit.  stop() also ends any process left whose environment
names this stack's store (the detached workers).

API (see each method): start()/stop() (or `with`), base_url, url(path),
port, prefix, upstream_url, upstream_port, state_dir, db_dir, conf_path, env,
fcgi, cli_path, request(method, path, body=None, headers=None, timeout=30) ->
(status, HTTPMessage, json-or-text), cli(*args, input=None) ->
CompletedProcess, upstream_ctl(path, body=None, method="POST"),
demo_feed(id, **fields), task(id), wait_task(id, statuses=TERMINAL, timeout=60),
log_tail(), scan_sanitizer_reports(), sanitizer_reports (after stop()).
Extra lighttpd settings go through env, e.g. env={"TF_ACCESSLOG": "off"} for
benchmarks (see the TF_* list in deploy/lighttpd/threatfeed.conf).

Environment: TF_BIN_DIR (default build/) picks the binaries; a bin dir named
"asan" turns on ASAN_OPTIONS/UBSAN_OPTIONS for everything started.
TF_KEEP_TMP=1 keeps every state dir; otherwise it is kept only when start()
failed, the `with` block raised, stop(keep=True), or a sanitizer report was
found in the logs.  TF_STACK_QUIET=1 silences the one-line progress notes.
"""

import atexit
import ctypes
import grp
import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(REPO, "deploy")
UPSTREAM = os.path.join(REPO, "tests", "upstream", "upstream.py")
TMP_ROOT = os.path.join(REPO, "build", "test-tmp")
APACHE_MODULES = "/usr/lib/apache2/modules"

COLLECTION = "91a7b528-80eb-42ed-a74d-c6fbd5a26116"
TERMINAL = frozenset(("completed", "failed", "stopped", "cancelled"))
SERVERS = ("lighttpd", "nginx", "apache", "apache-fcgid")

ASAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}
SANITIZER_RE = re.compile(
    r"ERROR: (Address|Leak|Memory|Thread)Sanitizer|runtime error:|"
    r"SUMMARY: UndefinedBehaviorSanitizer|SUMMARY: AddressSanitizer")
ADDR_IN_USE_RE = re.compile(r"Address already in use|EADDRINUSE|could not bind", re.I)

_APACHE_BASE_MODULES = ("mpm_event", "authz_core", "mime", "dir", "alias", "headers")
_APACHE_SERVER_MODULES = {
    "apache": _APACHE_BASE_MODULES + ("proxy", "proxy_fcgi"),
    "apache-fcgid": _APACHE_BASE_MODULES + ("rewrite", "env", "fcgid"),
}
_NEEDS = {
    "lighttpd": ("lighttpd",),
    "nginx": ("nginx", "spawn-fcgi"),
    "apache": ("apache2", "spawn-fcgi"),
    "apache-fcgid": ("apache2",),
}


class StackError(RuntimeError):
    """The stack could not be started (the message carries the log tails)."""


def missing_requirements(server):
    """Why `server` cannot run on this machine (missing binaries or Apache
    modules), or None when everything is there.  Tests skip on this."""
    if server not in _NEEDS:
        raise ValueError("unknown server %r (one of %s)" % (server, ", ".join(SERVERS)))
    missing = []
    for prog in _NEEDS[server]:
        if not _which(prog):
            missing.append(prog)
    for mod in _APACHE_SERVER_MODULES.get(server, ()):
        if not os.path.exists(os.path.join(APACHE_MODULES, "mod_%s.so" % mod)):
            missing.append("mod_%s" % mod)
    return ("not installed: " + ", ".join(missing)) if missing else None


def _which(prog):
    return shutil.which(prog) or shutil.which(prog, path="/usr/sbin:/sbin:/usr/local/sbin")


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_libc = None


def _prctl_pdeathsig():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _child_setup(parent_pid, user):
    """preexec_fn: drop to `user` (before PDEATHSIG: a credential change
    clears it), die with the parent, and catch the race where the parent
    already died."""
    def setup():
        if user is not None:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
        _prctl_pdeathsig()
        if os.getppid() != parent_pid:
            os._exit(1)
    return setup


def _tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    return "\n".join(data.splitlines()[-lines:])


class Stack:
    def __init__(self, server="lighttpd", bin_dir=None, conf=None, upstream_args=(),
                 port=0, upstream=True, fcgi_procs=2, env=None, prefix=None,
                 keep=False, start_timeout=20.0, user=None, agent=True):
        """
        server         one of SERVERS
        bin_dir        directory holding threatfeed and threatfeed.fcgi
                       (default: $TF_BIN_DIR or build/; relative to the repo)
        conf           dict written as `key = value` lines to the THREATFEED_CONF file
        upstream_args  extra arguments for tests/upstream/upstream.py (e.g. ["--demo"])
        port           web server port (0: a free one, retried on EADDRINUSE)
        upstream       False: start no upstream server
        fcgi_procs     handler processes (lighttpd max-procs, mod_fcgid max per class;
                       the spawn-fcgi stacks always run one)
        env            extra environment for everything started (and cli())
        prefix         URL mount prefix (apache-fcgid only; default "/~tester/tf")
        keep           keep the state dir after stop()
        start_timeout  seconds to wait for the upstream and for /api/health
        user           run handler/workers/cli() as this user (default: www-data
                       for the Apache stacks when root, else the current user)
        agent          on PostgreSQL, start a `threatfeed agent` beside the
                       handler (False: the runs are another host's business)
        """
        if server not in SERVERS:
            raise ValueError("unknown server %r (one of %s)" % (server, ", ".join(SERVERS)))
        self.server = server
        bin_dir = bin_dir or os.environ.get("TF_BIN_DIR") or "build"
        self.bin_dir = os.path.abspath(os.path.join(REPO, bin_dir))
        self.fcgi = os.path.join(self.bin_dir, "threatfeed.fcgi")
        self.cli_path = os.path.join(self.bin_dir, "threatfeed")
        self.asan = os.path.basename(os.path.normpath(self.bin_dir)) == "asan"
        self.conf = dict(conf or {})
        self.upstream_args = [str(a) for a in upstream_args]
        self.want_upstream = upstream
        self.want_agent = agent
        self.requested_port = int(port)
        self.fcgi_procs = max(1, int(fcgi_procs))
        self.extra_env = dict(env or {})
        if prefix is None:
            prefix = "/~tester/tf" if server == "apache-fcgid" else ""
        if prefix and server != "apache-fcgid":
            raise ValueError("prefix is only supported for apache-fcgid")
        self.prefix = prefix.rstrip("/")
        self.keep = keep
        self.start_timeout = float(start_timeout)
        if user is None and os.geteuid() == 0 and server.startswith("apache"):
            user = "www-data"
        self.user = pwd.getpwnam(user) if isinstance(user, str) else user

        self.state_dir = self.db_dir = self.conf_path = None
        self.port = None
        self.base_url = self.upstream_url = None
        self.upstream_port = None
        self.env = None
        self.sanitizer_reports = []
        self._procs = []          # [(name, Popen)] in start order
        self._started = False
        self._failed = False
        self._stopped = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ API
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stop(keep=True if exc_type is not None else None)
        return False

    def start(self):
        """Start everything; returns self.  Raises StackError (with log tails)."""
        if self._started:
            raise RuntimeError("Stack.start() called twice")
        self._started = True
        atexit.register(self.stop)
        try:
            for prog in ("threatfeed.fcgi", "threatfeed", "threatfeed-worker"):
                path = os.path.join(self.bin_dir, prog)
                if not os.access(path, os.X_OK):
                    raise StackError("%s is missing (build it: make%s)"
                                     % (path, " asan" if self.asan else ""))
            why = missing_requirements(self.server)
            if why:
                raise StackError("%s stack: %s" % (self.server, why))
            self._make_state_dir()
            if self.want_upstream:
                self._start_upstream()
            self._start_server_with_retries()
            if self.want_agent and self.db_dir.startswith("postgresql:"):
                # The handler only enqueues there: an agent starts the runs.
                self._spawn("agent", [self.cli_path, "agent"], user=self.user)
            self._note("%s is up at %s (state %s)" % (self.server, self.base_url, self.state_dir))
        except BaseException:
            self._failed = True
            self.stop(keep=True)
            raise
        return self

    def stop(self, keep=None):
        """Stop every process started (web server, handler, upstream, workers
        left on this store).  Removes the state dir unless kept (see module
        doc).  Safe to call more than once."""
        with self._lock:
            if self._stopped or not self._started:
                return
            self._stopped = True
        try:
            atexit.unregister(self.stop)
        except Exception:
            pass
        for name, proc in reversed(self._procs):
            self._terminate(proc)
        self._kill_store_processes()
        if self.state_dir:
            self.sanitizer_reports = self.scan_sanitizer_reports()
            if self.sanitizer_reports:
                sys.stderr.write("stack: sanitizer reports in %s:\n  %s\n" % (
                    self.state_dir, "\n  ".join(self.sanitizer_reports[:20])))
            if keep is None:
                keep = (self.keep or self._failed or bool(self.sanitizer_reports)
                        or os.environ.get("TF_KEEP_TMP") == "1")
            if keep:
                self._note("kept state dir %s" % self.state_dir, force=True)
            else:
                shutil.rmtree(self.state_dir, ignore_errors=True)

    def url(self, path="/"):
        """Absolute URL of `path` (relative to the mount prefix)."""
        return "http://127.0.0.1:%d%s%s" % (self.port, self.prefix, path)

    def request(self, method, path, body=None, headers=None, timeout=30):
        """One HTTP request to the web server.  `path` is relative to the mount
        prefix ("/api/health").  A dict/list body is sent as JSON with
        Content-Type: application/json (unless headers say otherwise); str
        and bytes are sent as they are.  Returns (status, headers, data):
        headers is an http.client.HTTPMessage (case-insensitive .get), data
        the parsed JSON when the response is JSON, else text."""
        hdrs = dict(headers or {})
        payload = body
        if isinstance(body, (dict, list)):
            payload = json.dumps(body).encode()
            if not any(k.lower() == "content-type" for k in hdrs):
                hdrs["Content-Type"] = "application/json"
        elif isinstance(body, str):
            payload = body.encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, self.prefix + path, body=payload, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, resp.headers, _decode(raw, resp.headers.get("Content-Type", ""))
        finally:
            conn.close()

    def cli(self, *args, input=None, timeout=120, check=False):
        """Run build/threatfeed ARGS against this stack's store (same env and
        user as the handler).  Returns subprocess.CompletedProcess (text)."""
        return subprocess.run(
            [self.cli_path] + [str(a) for a in args], input=input, env=self.env,
            capture_output=True, text=True, timeout=timeout, check=check,
            preexec_fn=self._preexec(self.user))

    def upstream_ctl(self, path, body=None, method="POST", timeout=10):
        """POST (or `method`) JSON `body` to the upstream's /_ctl/PATH, e.g.
        upstream_ctl("faults", {...}), upstream_ctl("stats", method="GET");
        returns the parsed answer.  Raises StackError on a non-2xx answer."""
        if not self.upstream_port:
            raise StackError("this stack has no upstream")
        path = path.lstrip("/")
        if not path.startswith("_ctl/"):
            path = "_ctl/" + path
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=timeout)
        try:
            if method == "GET":
                conn.request("GET", "/" + path)
            else:
                conn.request(method, "/" + path, body=json.dumps(body if body is not None else {}),
                             headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = _decode(resp.read(), resp.headers.get("Content-Type", ""))
        finally:
            conn.close()
        if not 200 <= resp.status < 300:
            raise StackError("upstream /%s answered %d: %r" % (path, resp.status, data))
        return data

    def demo_feed(self, feed_id="demo", **fields):
        """Feed JSON for the upstream's TAXII 2.1 collection (fields override)."""
        feed = {"id": feed_id, "name": "Demo TAXII 2.1", "type": "taxii21",
                "url": self.upstream_url, "collection": COLLECTION,
                "interval_s": 0, "enabled": True}
        feed.update(fields)
        return feed

    def task(self, task_id, headers=None):
        """GET the task; returns the task dict (raises AssertionError if not 200)."""
        status, _, data = self.request(
            "GET", "/api/threat-feeds/task-status/%s/" % task_id, headers=headers)
        if status != 200:
            raise AssertionError("task-status %s: %d %r" % (task_id, status, data))
        return data

    def wait_task(self, task_id, statuses=TERMINAL, timeout=60, interval=0.05, headers=None):
        """Poll task-status until its status is in `statuses`; returns the
        task.  Raises AssertionError with the last task on timeout."""
        deadline = time.monotonic() + timeout
        task = None
        while True:
            task = self.task(task_id, headers=headers)
            if task.get("status") in statuses:
                return task
            if time.monotonic() > deadline:
                raise AssertionError("task %s not in %s after %ss: %r"
                                     % (task_id, sorted(statuses), timeout, task))
            time.sleep(interval)

    def log_tail(self, lines=30):
        """The last lines of every log in the state dir, one block per file."""
        if not self.state_dir:
            return ""
        out = []
        for path in self._log_files():
            text = _tail(path, lines)
            if text:
                out.append("==> %s <==\n%s" % (os.path.relpath(path, self.state_dir), text))
        return "\n".join(out)

    # ------------------------------------------------------------ internals
    def _note(self, msg, force=False):
        if force or os.environ.get("TF_STACK_QUIET") != "1":
            sys.stderr.write("stack: %s\n" % msg)

    def _preexec(self, user):
        """preexec_fn for a child that should run as `user` (None: as we are)."""
        if user is not None and user.pw_uid == os.geteuid():
            user = None
        return _child_setup(os.getpid(), user)

    def _make_state_dir(self):
        self.www = os.path.join(REPO, "www")
        os.makedirs(TMP_ROOT, exist_ok=True)
        tmp_root = TMP_ROOT
        # A checkout the service user cannot reach (e.g. under /root): run from
        # a state dir in /tmp with copies of the binaries and www/.
        relocate = self.user is not None and not all(
            _reachable(p, self.user) for p in (TMP_ROOT, self.fcgi, self.cli_path, self.www))
        if relocate:
            tmp_root = os.path.join(tempfile.gettempdir(), "threatfeed-test-tmp")
        os.makedirs(tmp_root, exist_ok=True)
        self.state_dir = tempfile.mkdtemp(prefix="%s-" % self.server, dir=tmp_root)
        os.chmod(self.state_dir, 0o755)
        self._note("state dir %s" % self.state_dir)
        if relocate:
            self._note("%s cannot reach %s: using copies" % (self.user.pw_name, REPO))
            bdir = os.path.join(self.state_dir, "bin")
            os.makedirs(bdir)
            for prog in ("threatfeed", "threatfeed-worker", "threatfeed.fcgi"):
                shutil.copy2(os.path.join(self.bin_dir, prog), bdir)
            self.fcgi = os.path.join(bdir, "threatfeed.fcgi")
            self.cli_path = os.path.join(bdir, "threatfeed")
            self.www = os.path.join(self.state_dir, "www")
            shutil.copytree(os.path.join(REPO, "www"), self.www)
        from runenv import store_location
        self.db_dir = store_location(self.state_dir, self.cli_path)
        if not self.db_dir.startswith("postgresql:"):
            os.makedirs(self.db_dir)
        self.conf_path = os.path.join(self.state_dir, "threatfeed.conf")
        with open(self.conf_path, "w") as f:
            f.write("# written by tests/integration/stack.py\n")
            for k, v in self.conf.items():
                if isinstance(v, bool):
                    v = int(v)
                f.write("%s = %s\n" % (k, v))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("THREATFEED_", "TF_"))}
        if self.asan:
            for k, v in ASAN_ENV.items():
                env.setdefault(k, v)
        env.update({
            "THREATFEED_STATE_DIR": self.state_dir,
            "THREATFEED_DB": self.db_dir,
            "THREATFEED_CONF": self.conf_path,
            "THREATFEED_WORKER": self.cli_path,
            # the handler logs to syslog under FastCGI by default: keep its
            # messages in the state dir's logs instead
            "THREATFEED_LOG": "stderr",
        })
        env.update({k: str(v) for k, v in self.extra_env.items()})
        self.env = env
        if self.user is not None and os.geteuid() == 0:
            for root, dirs, files in os.walk(self.state_dir):
                for name in [root] + [os.path.join(root, n) for n in dirs + files]:
                    os.chown(name, self.user.pw_uid, self.user.pw_gid)

    def _spawn(self, name, argv, env=None, user=None, log=None):
        log = log or os.path.join(self.state_dir, "%s.out" % name)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env or self.env, cwd=self.state_dir, start_new_session=True,
                preexec_fn=self._preexec(user))
        self._procs.append((name, proc))
        return proc

    def _terminate(self, proc, grace=5.0):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        try:  # whatever is left in the group (also when the leader exited)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass

    def _store_processes(self):
        """PIDs (not ours) whose environment names this stack's store."""
        if not self.db_dir:
            return []
        needles = (("THREATFEED_DB=" + self.db_dir).encode(),
                   ("THREATFEED_STATE_DIR=" + self.state_dir).encode())
        me = os.getpid()
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                with open("/proc/%s/environ" % entry, "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            if any(n in env for n in needles):
                pids.append(int(entry))
        return pids

    def _kill_store_processes(self, grace=3.0):
        pids = self._store_processes()
        if not pids:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                pids = [p for p in pids if _alive(p)]
                if not pids:
                    return
                time.sleep(0.05)

    def _log_files(self):
        files = []
        for root, dirs, names in os.walk(self.state_dir):
            dirs[:] = [d for d in dirs if os.path.join(root, d) != self.db_dir
                       and d not in ("htdocs", "nginx-tmp")]
            for n in sorted(names):
                if n.endswith((".log", ".out", ".err")):
                    files.append(os.path.join(root, n))
        return files

    def scan_sanitizer_reports(self):
        reports = []
        for path in self._log_files():
            try:
                with open(path, "r", errors="replace") as f:
                    for line in f:
                        if SANITIZER_RE.search(line):
                            reports.append("%s: %s" % (os.path.basename(path), line.strip()))
            except OSError:
                pass
        return reports

    def _fail(self, msg):
        tail = self.log_tail()
        raise StackError("%s\n--- logs (%s) ---\n%s" % (msg, self.state_dir, tail or "(none)"))

    # upstream ---------------------------------------------------------------
    def _start_upstream(self):
        if not os.path.exists(UPSTREAM):
            raise StackError("%s is missing" % UPSTREAM)
        port_file = os.path.join(self.state_dir, "upstream.port")
        proc = self._spawn("upstream", [sys.executable, UPSTREAM, "--port", "0",
                                        "--port-file", port_file] + self.upstream_args)
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                with open(port_file) as f:
                    text = f.read().strip()
                if text:
                    self.upstream_port = int(text)
                    break
            except (OSError, ValueError):
                pass
            if proc.poll() is not None:
                self._fail("the upstream server exited with %s before writing its port"
                           % proc.returncode)
            if time.monotonic() > deadline:
                self._fail("the upstream server wrote no port within %ss" % self.start_timeout)
            time.sleep(0.05)
        self.upstream_url = "http://127.0.0.1:%d/taxii2/" % self.upstream_port

    # web server -------------------------------------------------------------
    def _start_server_with_retries(self):
        attempts = 1 if self.requested_port else 5
        for attempt in range(attempts):
            self.port = self.requested_port or free_port()
            self.base_url = self.url("/")
            procs = self._start_server()
            ok, why = self._wait_healthy(procs)
            if ok:
                return
            in_use = any(ADDR_IN_USE_RE.search(_tail(p, 200) or "") for p in self._log_files())
            if in_use and attempt + 1 < attempts:
                self._note("port %d was taken, retrying" % self.port)
                for p in procs:
                    self._terminate(p)
                    self._procs = [(n, q) for n, q in self._procs if q is not p]
                self._truncate_logs()
                continue
            self._fail("%s stack not healthy at %sapi/health: %s" % (self.server, self.base_url, why))

    def _truncate_logs(self):
        for path in self._log_files():
            if os.path.basename(path) != "upstream.out":
                try:
                    os.truncate(path, 0)
                except OSError:
                    pass

    def _wait_healthy(self, procs):
        deadline = time.monotonic() + self.start_timeout
        why = "no answer"
        while time.monotonic() < deadline:
            for p in procs:
                if p.poll() is not None:
                    return False, "%s exited with status %s" % (p.args[0], p.returncode)
            try:
                status, _, data = self.request("GET", "/api/health", timeout=2)
                if status == 200:
                    return True, None
                why = "last answer %d %r" % (status, data if not isinstance(data, str) else data[:200])
            except (OSError, http.client.HTTPException) as e:
                why = "last error: %s" % e
            time.sleep(0.1)
        return False, "timed out after %ss (%s)" % (self.start_timeout, why)

    def _start_server(self):
        return getattr(self, "_start_" + self.server.replace("-", "_"))()

    def _start_lighttpd(self):
        env = dict(self.env)
        env.update({
            "TF_PORT": str(self.port),
            "TF_BIND": "127.0.0.1",
            "TF_WWW": self.www,
            "TF_FCGI": self.fcgi,
            "TF_STATE": self.state_dir,
            "TF_DB": self.db_dir,
            "TF_CONF": self.conf_path,
            "TF_WORKER": self.cli_path,
            "TF_LOG": self.env.get("THREATFEED_LOG", ""),
            "TF_RUNDIR": self.state_dir,
            "TF_FCGI_PROCS": str(self.fcgi_procs),
            "TF_MAX_CONNECTIONS": "1024",
        })
        conf = os.path.join(DEPLOY, "lighttpd", "threatfeed.conf")
        return [self._spawn("lighttpd", [_which("lighttpd"), "-D", "-f", conf], env=env)]

    def _spawn_fcgi(self):
        sock = os.path.join(self.state_dir, "fcgi.sock")
        if os.path.exists(sock):
            os.unlink(sock)
        # -n: spawn-fcgi binds the socket and execs the handler with it on fd 0
        proc = self._spawn("spawn-fcgi", [_which("spawn-fcgi"), "-n", "-s", sock, "-M", "0600",
                                          "--", self.fcgi], user=self.user)
        return proc, sock

    def _start_nginx(self):
        proc, sock = self._spawn_fcgi()
        ndir = os.path.join(self.state_dir, "nginx")
        os.makedirs(os.path.join(ndir, "tmp"), exist_ok=True)
        for f in ("fastcgi_params", "mime.types"):
            shutil.copy(os.path.join("/etc/nginx", f), ndir)
        with open(os.path.join(DEPLOY, "nginx", "threatfeed.conf")) as f:
            site = f.read()
        site = _subst(site, r"^(\s*)listen\s+[^;]+;", r"\1listen 127.0.0.1:%d;" % self.port)
        site = _subst(site, r"^(\s*)root\s+[^;]+;", r"\1root %s;" % self.www)
        site = _subst(site, r"^(\s*)fastcgi_pass\s+[^;]+;", r"\1fastcgi_pass unix:%s;" % sock)
        with open(os.path.join(ndir, "site.conf"), "w") as f:
            f.write(site)
        user = ""
        if os.geteuid() == 0:
            pw = pwd.getpwuid(0)
            user = "user %s;" % pw.pw_name
        tmp = os.path.join(ndir, "tmp")
        with open(os.path.join(ndir, "nginx.conf"), "w") as f:
            f.write("""# generated by tests/integration/stack.py
daemon off;
master_process on;
worker_processes 2;
%(user)s
pid %(d)s/nginx.pid;
error_log %(s)s/nginx-error.log warn;
events { worker_connections 1024; }
http {
    include mime.types;
    default_type application/octet-stream;
    access_log %(s)s/nginx-access.log;
    client_body_temp_path %(t)s/body;
    fastcgi_temp_path %(t)s/fastcgi;
    proxy_temp_path %(t)s/proxy;
    uwsgi_temp_path %(t)s/uwsgi;
    scgi_temp_path %(t)s/scgi;
    include %(d)s/site.conf;
}
""" % {"user": user, "d": ndir, "s": self.state_dir, "t": tmp})
        self._wait_socket(sock, proc)
        nginx = self._spawn("nginx", [_which("nginx"), "-e", os.path.join(self.state_dir, "nginx-error.log"),
                                      "-p", ndir + "/", "-c", os.path.join(ndir, "nginx.conf")])
        return [proc, nginx]

    def _apache_main_conf(self, modules, body):
        adir = os.path.join(self.state_dir, "apache")
        os.makedirs(os.path.join(adir, "run"), exist_ok=True)
        user = ""
        if os.geteuid() == 0:
            u = self.user or pwd.getpwnam("www-data")
            user = "User %s\nGroup #%d" % (u.pw_name, u.pw_gid)
        loads = "\n".join("LoadModule %s_module %s/mod_%s.so" % (m, APACHE_MODULES, m)
                          for m in modules)
        conf = os.path.join(adir, "httpd.conf")
        with open(conf, "w") as f:
            f.write("""# generated by tests/integration/stack.py
ServerRoot /etc/apache2
DefaultRuntimeDir %(a)s/run
PidFile %(a)s/apache.pid
ServerName 127.0.0.1
Listen 127.0.0.1:%(port)d
%(user)s
ErrorLog %(s)s/apache-error.log
LogLevel warn
%(loads)s
TypesConfig /etc/mime.types
LogFormat "%%h %%l %%u %%t \\"%%r\\" %%>s %%b %%D" tf
CustomLog %(s)s/apache-access.log tf
<IfModule mpm_event_module>
    StartServers 1
    ServerLimit 2
    ThreadsPerChild 16
    MaxRequestWorkers 32
</IfModule>
%(body)s
""" % {"a": adir, "s": self.state_dir, "port": self.port, "user": user,
                "loads": loads, "body": body})
        if self.user is not None and os.geteuid() == 0:
            for root, dirs, files in os.walk(self.state_dir):
                for name in [root] + [os.path.join(root, n) for n in dirs + files]:
                    os.chown(name, self.user.pw_uid, self.user.pw_gid)
        return conf

    def _start_apache(self):
        proc, sock = self._spawn_fcgi()
        body = """Define TF_LISTEN 127.0.0.1:%d
Define TF_WWW %s
Define TF_SOCKET %s
Include %s
""" % (self.port, self.www, sock, os.path.join(DEPLOY, "apache", "threatfeed.conf"))
        conf = self._apache_main_conf(_APACHE_SERVER_MODULES["apache"], body)
        self._wait_socket(sock, proc)
        ap = self._spawn("apache", [_which("apache2"), "-DFOREGROUND", "-f", conf])
        return [proc, ap]

    def _start_apache_fcgid(self):
        htdocs = os.path.join(self.state_dir, "htdocs")
        docroot = os.path.join(self.state_dir, "docroot")
        if not os.path.isdir(htdocs):
            shutil.copytree(self.www, htdocs)
            os.makedirs(os.path.join(htdocs, "api"), exist_ok=True)
            os.makedirs(docroot, exist_ok=True)
            with open(os.path.join(DEPLOY, "apache", "fcgid", ".htaccess")) as f:
                ht = f.read()
            if self.prefix:
                ht = _subst(ht, r"^(\s*)#?RewriteBase\s+\S+", r"\1RewriteBase %s/" % self.prefix)
            with open(os.path.join(htdocs, ".htaccess"), "w") as f:
                f.write(ht)
            with open(os.path.join(DEPLOY, "apache", "fcgid", "threatfeed.fcgi.sh")) as f:
                wrapper = f.read()
            for k, v in (("THREATFEED_STATE_DIR", self.state_dir), ("THREATFEED_DB", self.db_dir),
                         ("THREATFEED_CONF", self.conf_path), ("THREATFEED_WORKER", self.cli_path),
                         ("TF_HANDLER", self.fcgi)):
                wrapper = _subst(wrapper, r"^%s=.*$" % k, "%s=%s" % (k, _shquote(v)))
            extra = "".join("export %s=%s\n" % (k, _shquote(self.env[k]))
                            for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "THREATFEED_LOG")
                            if k in self.env)
            wrapper = wrapper.replace("\nexec ", "\n" + extra + "exec ", 1)
            api = os.path.join(htdocs, "api", "threatfeed.fcgi")
            with open(api, "w") as f:
                f.write(wrapper)
            os.chmod(api, 0o755)
        fdir = os.path.join(self.state_dir, "fcgid")
        os.makedirs(fdir, exist_ok=True)
        mount = ("Alias %s %s\nDocumentRoot %s" % (self.prefix, htdocs, docroot) if self.prefix
                 else "DocumentRoot %s" % htdocs)
        body = """FcgidIPCDir %(f)s
FcgidProcessTableFile %(f)s/shm
FcgidMaxProcessesPerClass %(procs)d
FcgidMinProcessesPerClass 0
FcgidIOTimeout 60
FcgidMaxRequestLen 131072
%(mount)s
<Directory %(h)s>
    AllowOverride All
    Require all granted
</Directory>
<Directory %(d)s>
    Require all granted
</Directory>
""" % {"f": fdir, "procs": self.fcgi_procs, "mount": mount, "h": htdocs, "d": docroot}
        conf = self._apache_main_conf(_APACHE_SERVER_MODULES["apache-fcgid"], body)
        return [self._spawn("apache", [_which("apache2"), "-DFOREGROUND", "-f", conf])]

    def _wait_socket(self, sock, proc):
        deadline = time.monotonic() + self.start_timeout
        while not os.path.exists(sock):
            if proc.poll() is not None:
                self._fail("spawn-fcgi exited with %s" % proc.returncode)
            if time.monotonic() > deadline:
                self._fail("no handler socket %s after %ss" % (sock, self.start_timeout))
            time.sleep(0.02)


def _reachable(path, user):
    """Whether `user` can traverse to `path` (mode bits only, no ACLs)."""
    groups = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}
    path = os.path.abspath(path)
    parts = path.split(os.sep)
    for i in range(1, len(parts)):
        d = os.sep.join(parts[:i]) or os.sep
        try:
            st = os.stat(d)
        except OSError:
            return False
        if st.st_uid == user.pw_uid:
            ok = st.st_mode & 0o100
        elif st.st_gid in groups:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return False
    return True


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _decode(raw, content_type):
    text = raw.decode("utf-8", "replace")
    if "json" in content_type.lower() or text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def _subst(text, pattern, repl):
    new, n = re.subn(pattern, repl, text, count=1, flags=re.M)
    if n != 1:
        raise StackError("deploy file changed: no line matches %r" % pattern)
    return new


def _shquote(s):
    return "'" + str(s).replace("'", "'\\''") + "'"
