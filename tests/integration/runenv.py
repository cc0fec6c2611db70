"""Fixture for tests of runs without a web server: a fresh store, one or more
test upstreams, and the real `threatfeed` CLI, supervisor and worker processes.

    env = RunEnv(conf={"grace_period_s": 1})
    up = env.upstream("--objects", "1000", "--page-size", "100")
    env.add_feed("f1", up)
    task = env.consume("f1")
    env.wait(task, {"completed"})
"""
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UPSTREAM = os.path.join(REPO, "tests", "upstream", "upstream.py")
COLLECTION = "91a7b528-80eb-42ed-a74d-c6fbd5a26116"
TERMINAL = frozenset(("completed", "failed", "stopped", "cancelled"))


def _pdeathsig():
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Upstream:
    def __init__(self, proc, port):
        self.proc, self.port = proc, port
        self.url = "http://127.0.0.1:%d/taxii2/" % port
        self.base = "http://127.0.0.1:%d" % port

    def ctl(self, path, body=None):
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        method = "GET" if body is None and path.startswith("stats") else "POST"
        conn.request(method, "/_ctl/" + path, body=None if method == "GET" else json.dumps(body or {}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = json.loads(resp.read() or b"null")
        conn.close()
        if resp.status >= 300:
            raise AssertionError("upstream %s: %d %r" % (path, resp.status, data))
        return data


def _ppid(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def run_processes(task_id):
    """{role: pid} of the run's supervisor and worker, from /proc. Between
    fork and exec the worker still reads "supervise": a "supervise" whose
    parent is one too is that worker, not the supervisor."""
    found, sups = {}, {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
            if len(argv) < 3 or argv[2].decode(errors="replace") != task_id:
                continue
            if argv[1] == b"work":
                found["work"] = int(pid)
            elif argv[1] == b"supervise":
                sups[int(pid)] = _ppid(int(pid))
        except OSError:
            continue
    real = [pid for pid, parent in sups.items() if parent not in sups]
    if real:
        found["supervise"] = real[0]
    return found


_pg_counter = [0]


def store_location(state_dir, cli_path):
    """A new, empty store: a directory, or with TF_IT_PG=<postgresql URI> (set
    by scripts/test.sh for the PostgreSQL pass) a new schema of that database,
    migrated by the CLI the way an operator would."""
    base = os.environ.get("TF_IT_PG")
    if not base:
        return os.path.join(state_dir, "db")
    _pg_counter[0] += 1
    schema = "it_%d_%d" % (os.getpid(), _pg_counter[0])
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", base, "-c", "CREATE SCHEMA " + schema],
                   check=True, stdout=subprocess.DEVNULL)
    uri = "%s%soptions=-csearch_path%%3D%s" % (base, "&" if "?" in base else "?", schema)
    subprocess.run([cli_path, "db", "migrate"], check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, THREATFEED_DB=uri))
    return uri


class RunEnv:
    def __init__(self, conf=None, bin_dir=None):
        bin_dir = bin_dir or os.environ.get("TF_BIN_DIR") or os.path.join(REPO, "build")
        self.cli_path = os.path.join(bin_dir, "threatfeed")
        root = os.path.join(REPO, "build", "test-tmp")
        os.makedirs(root, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="runs-", dir=root)
        self.db = store_location(self.dir, self.cli_path)
        self.log = os.path.join(self.dir, "runs.log")
        self.env = dict(os.environ, THREATFEED_DB=self.db, THREATFEED_STATE_DIR=self.dir,
                        THREATFEED_RUN_LOG=self.log)
        if conf:
            path = os.path.join(self.dir, "threatfeed.conf")
            with open(path, "w") as f:
                for k, v in conf.items():
                    f.write("%s = %s\n" % (k, v))
            self.env["THREATFEED_CONF"] = path
        self.upstreams = []
        self.agent = None
        if self.db.startswith("postgresql:"):
            self.start_agent()

    def start_agent(self):
        """On PostgreSQL, consumes only enqueue: an agent starts the runs, as
        on a worker host (README "Scaling out")."""
        with open(self.log, "ab") as out:
            self.agent = subprocess.Popen([self.cli_path, "agent"], env=self.env,
                                          stdout=out, stderr=subprocess.STDOUT,
                                          preexec_fn=_pdeathsig)

    # processes --------------------------------------------------------------
    def upstream(self, *args, start_s=120):
        port_file = os.path.join(self.dir, "upstream-%d.port" % len(self.upstreams))
        proc = subprocess.Popen([sys.executable, UPSTREAM, "--port", "0", "--port-file", port_file,
                                 "--quiet", "--lifetime-s", "900"] + list(args),
                                stdout=subprocess.DEVNULL, preexec_fn=_pdeathsig)
        deadline = time.monotonic() + start_s
        while not os.path.exists(port_file):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("upstream did not start")
            time.sleep(0.02)
        with open(port_file) as f:
            up = Upstream(proc, int(f.read()))
        self.upstreams.append(up)
        return up

    def cli(self, *args, input=None, check=True):
        res = subprocess.run([self.cli_path] + [str(a) for a in args], input=input,
                             env=self.env, capture_output=True, text=True, timeout=120)
        if check and res.returncode != 0:
            raise AssertionError("threatfeed %s: exit %d: %s" % (" ".join(map(str, args)),
                                                              res.returncode, res.stderr))
        return res

    def run_processes(self, task_id):
        return run_processes(task_id)

    def close(self, ok=True):
        for up in self.upstreams:
            up.proc.terminate()
            try:
                up.proc.wait(5)
            except subprocess.TimeoutExpired:
                up.proc.kill()
        # Runs still alive belong to this store only: end them.
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open("/proc/%s/environ" % pid, "rb") as f:
                        if ("THREATFEED_DB=" + self.db).encode() in f.read().split(b"\0"):
                            os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
        if ok and not os.environ.get("TF_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def sanitizer_report(self):
        try:
            with open(self.log, errors="replace") as f:
                text = f.read()
        except OSError:
            return ""
        return text if ("Sanitizer" in text or "runtime error:" in text) else ""

    # feeds and tasks ----------------------------------------------------------
    def add_feed(self, feed_id, up, **fields):
        feed = {"id": feed_id, "name": feed_id, "type": "taxii21", "url": up.url,
                "collection": COLLECTION, "options": {"page_size": 100}}
        feed.update(fields)
        return json.loads(self.cli("feed", "add", "--json", "-", input=json.dumps(feed)).stdout)

    def feed(self, feed_id):
        return json.loads(self.cli("feed", "show", feed_id).stdout)

    def consume(self, feed_id):
        return json.loads(self.cli("consume", feed_id).stdout)["task_id"]

    def status(self, task_id):
        return json.loads(self.cli("status", task_id).stdout)

    def cancel(self, task_id, mode="stop_now", check=True):
        return self.cli("cancel", task_id, "--mode", mode, check=check)

    def export(self, feed_id=None):
        return self.cli("export", *([feed_id] if feed_id else [])).stdout

    def wait(self, task_id, statuses=TERMINAL, timeout=60, pred=None):
        deadline = time.monotonic() + timeout
        while True:
            t = self.status(task_id)
            if t["status"] in statuses and (pred is None or pred(t)):
                return t
            if time.monotonic() > deadline:
                raise AssertionError("task not in %s after %ss: %s" % (sorted(statuses), timeout,
                                                                     json.dumps(t)))
            time.sleep(0.02)
