#!/usr/bin/env python3
"""make soak: feeds of every type against the fault-injecting upstream while
random faults hit every process, and a checker looks for any broken promise
(issue 14 §2; README.md "Soak").

    SOAK_S=600 SOAK_SEED=1 python3 tests/soak/soak.py

One lighttpd stack (tests/integration/stack.py, 2 FastCGI processes), one
upstream per feed (so every upstream request belongs to one feed and its
request log, with timestamps, tells which run sent it), feeds: 3 x taxii21,
otx, virustotal, stix_bundle.  For SOAK_S seconds it picks a random step
(consume, cancel by task / by feed in both modes and repeated / raised,
SIGKILL or SIGSTOP of a worker, supervisor or FastCGI process, web server
restart, disk fill and free, history clear, upstream faults, new upstream
data) and after every step checks:

  api        every API answer is JSON with a status of docs/SPEC.md §2 (an
             error carries "error" and a SPEC "code"); a transport error or a
             web-server page is tolerated only while the web server or a
             FastCGI process is being restarted/killed (counted)
  orphan     no task running/stopping/cancelling once its processes are gone,
             beyond SOAK_DETECT_S (the reaper runs on the next access)
  counts     when a feed is idle: `threatfeed export FEED` lines ==
             feed.indicator_count == sum of indicators_created of its runs
             that were not cancelled (every terminal task is seen before
             history is cleared)
  rollback   every run that ended `cancelled` left its feed's export byte
             for byte as snapshot before the run was started
  cursor     a taxii21 run's first objects request asks added_after the
             date added of the last stored object (objects are stored in
             order, so: of object N-1 for N stored; none for N = 0)
  after_ack  no upstream request of a feed after its run's cancel was
             acknowledged (upstream request log, mapped to wall time)
  slots      worker processes of this store <= max_concurrent_runs
  leaks      at the end, once everything is idle: no worker or supervisor
             process, no active or queued task, `threatfeed gc` finds no
             stale undo entries; FastCGI fds flat
  memory     RSS of long-lived FastCGI processes and of workers stays flat
  sanitizer  no ASan/UBSan report in any log
  cancel_latency  with SOAK_FREEZE_IN_COMMIT=1: every cancel answered within 5 s
             (the worker may be frozen inside a commit)

It prints `name: value` lines and exits 1 at the first violation, with the
seed, the log and a copy of the store.

Environment: SOAK_S (600), SOAK_SEED (random), SOAK_BIN (build/asan),
SOAK_OUT (build/soak), SOAK_DETECT_S (15), SOAK_FREEZE_IN_COMMIT (default
1: leave SIGSTOPped workers to the supervisor's escalation with a cancel, at
any instant, even inside a store commit — cancels do not wait on a worker's
write, issue 14 §1; 0 = SIGSTOP for at most 1.5 s, then SIGCONT), SOAK_DISK_MB (64, the tmpfs holding the store when
root), SOAK_MUTATE=name (development: break one check on purpose to prove it
can fail: api, orphan, counts, rollback, cursor, after_ack, slots).
"""
import datetime
import http.client
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, os.path.join(REPO, "tests", "upstream"))

from stack import Stack, TERMINAL, COLLECTION, SANITIZER_RE  # noqa: E402
from runenv import run_processes, Upstream, _pdeathsig, UPSTREAM  # noqa: E402
from upstream import stix_added_us, parse_ts  # noqa: E402

TOKEN = "soak-token"
AUTH = {"Authorization": "Bearer " + TOKEN}
MAX_RUNS = 3
GRACE_S = 2
PAGE = 100
ACTIVE = frozenset(("running", "stopping", "cancelling"))
SPEC_STATUSES = {200, 201, 202, 204, 304, 400, 401, 403, 404, 405, 409, 413, 415,
                 500, 501, 503, 507}
SPEC_CODES = {"bad_request", "invalid_path", "invalid_query", "invalid_parameter",
              "invalid_content_length", "incomplete_body", "invalid_json", "invalid_field",
              "bad_mode", "unauthorized", "forbidden_role", "csrf", "not_found",
              "method_not_allowed", "exists", "run_active", "no_active_run", "task_finished",
              "conflict", "payload_too_large", "unsupported_media_type", "internal_error",
              "config_error", "spawn_failed", "not_implemented", "store_unavailable",
              "store_not_writable", "store_disk_full"}
VT_TARGETS = ["001015aafcae8a6942366cbb0e7d39c0738752a7800c41ea1c655d47b0a4d04c",
              "fff40032c3dc062147c530e3a0a5c7e6acda4d1f1369fbc994cddd3c19a2de88",
              "haiku-os.org"]


class Violation(Exception):
    pass


def now_rfc3339(t=None):
    t = time.time() if t is None else t
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


def ts(text):
    """RFC 3339 -> seconds since the epoch (float), None for None."""
    if not text:
        return None
    return parse_ts(text) / 1e6


def proc_cmdline(pid):
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def proc_status(pid):
    """(state letter, VmRSS kB) or None."""
    try:
        with open("/proc/%s/status" % pid) as f:
            text = f.read()
    except OSError:
        return None
    state = re.search(r"^State:\s+(\S)", text, re.M).group(1)
    m = re.search(r"^VmRSS:\s+(\d+)", text, re.M)
    return state, int(m.group(1)) if m else 0


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


class SoakStack(Stack):
    """The stack with its store on a small tmpfs (when root), so the soak can
    fill the store's disk and free it again."""
    disk_mb = 64

    def _make_state_dir(self):
        super()._make_state_dir()
        self.tmpfs = False
        if os.geteuid() == 0:
            res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % self.disk_mb,
                                  "tmpfs", self.db_dir], capture_output=True, text=True)
            self.tmpfs = res.returncode == 0

    def request(self, method, path, body=None, headers=None, timeout=30):
        # stack.py waits for /api/health without headers: send the token.
        return super().request(method, path, body=body, headers=headers or AUTH, timeout=timeout)

    def restart_web(self):
        """SIGTERM lighttpd (and its FastCGI processes, same group), start it again."""
        for name, proc in list(self._procs):
            if name == "lighttpd":
                self._terminate(proc)
                self._procs.remove((name, proc))
        procs = self._start_server()
        ok, why = self._wait_healthy(procs)
        if not ok:
            raise Violation("web server did not come back: %s" % why)


class Soak:
    def __init__(self):
        self.duration = float(os.environ.get("SOAK_S", "600"))
        seed = os.environ.get("SOAK_SEED")
        self.seed = int(seed) if seed else random.SystemRandom().randrange(1, 1 << 31)
        self.rng = random.Random(self.seed)
        self.detect_s = float(os.environ.get("SOAK_DETECT_S", "15"))
        self.freeze_in_commit = os.environ.get("SOAK_FREEZE_IN_COMMIT", "1") == "1"
        self.map_start = None
        self.mutate = os.environ.get("SOAK_MUTATE", "")
        self.out = os.path.abspath(os.environ.get("SOAK_OUT") or os.path.join(REPO, "build", "soak"))
        os.makedirs(self.out, exist_ok=True)
        self.log_path = os.path.join(self.out, "soak-%d.log" % self.seed)
        self.logf = open(self.log_path, "w")
        self.fig = {k: 0 for k in (
            "operations", "consumes", "cancels_stop_now_task", "cancels_cancel_job_task",
            "cancels_stop_now_feed", "cancels_cancel_job_feed", "cancels_repeated",
            "cancels_raised", "kills_worker", "kills_supervisor", "kills_fcgi", "stops_worker",
            "stops_supervisor", "stops_fcgi", "web_restarts", "disk_fills", "history_clears",
            "upstream_faults", "data_grows", "api_requests", "api_tolerated_errors",
            "runs_completed", "runs_failed", "runs_stopped", "runs_cancelled", "runs_forced",
            "checks", "violations")}
        self.cancel_api_ms = []       # cancel request -> its 202
        self.cancel_end_s = []        # cancel request -> task terminal
        self.feeds = {}               # id -> dict(type, up, ...)
        self.tasks = {}               # task id -> our record
        self.stopped = {}             # pid -> (kind, SIGCONT at monotonic or None)
        self.fault_until = 0.0        # monotonic: web-level errors tolerated until then
        self.max_workers = 0
        self.rss = {"fcgi": {}, "worker_first": [], "worker_last": []}
        self.fds = {}
        self.started = time.monotonic()
        self.lock = threading.RLock()
        self.done = False
        self.slot_violation = None

    # ---------------------------------------------------------------- output
    def note(self, msg):
        self.logf.write("%8.2f %s\n" % (time.monotonic() - self.started, msg))
        self.logf.flush()

    def violation(self, check, msg):
        self.fig["violations"] += 1
        raise Violation("%s: %s" % (check, msg))

    # ---------------------------------------------------------------- setup
    def start(self):
        SoakStack.disk_mb = int(os.environ.get("SOAK_DISK_MB", "64"))
        bin_dir = os.environ.get("SOAK_BIN") or os.environ.get("TF_BIN_DIR") or "build/asan"
        self.s = SoakStack("lighttpd", bin_dir=bin_dir, upstream=False, fcgi_procs=2, keep=True,
                           conf={"api_token": TOKEN, "max_concurrent_runs": MAX_RUNS,
                                 "grace_period_s": GRACE_S, "history_keep": 1000,
                                 # the map starts at 1 MiB: it grows (doubling)
                                 # many times under the handler's readers
                                 "map_size_mb": 1},
                           env=self.stack_env(bin_dir))
        self.s.start()
        self.note("seed %d, state %s, tmpfs %s" % (self.seed, self.s.state_dir, self.s.tmpfs))
        self.map_start = self.map_bytes()
        specs = [("t1", "taxii21", 3000), ("t2", "taxii21", 2000), ("t3", "taxii21", 1500),
                 ("o1", "otx", 60), ("v1", "virustotal", 0), ("b1", "stix_bundle", 1500)]
        for fid, ftype, n in specs:
            up = self.upstream(ftype, n)
            feed = {"id": fid, "name": fid, "type": ftype, "interval_s": 0}
            if ftype == "taxii21":
                feed.update(url=up.url, collection=COLLECTION, options={"page_size": PAGE})
            elif ftype == "otx":
                feed.update(url=up.base, secret="otx-key", options={"page_size": 10})
            elif ftype == "virustotal":
                feed.update(url=up.base, secret="vt-key",
                            options={"requests_per_minute": 600, "targets": VT_TARGETS})
            else:
                feed.update(url=up.base + "/bundles/generated.json")
            st, data = self.api("POST", "/api/threat-feeds/", feed)
            if st != 201:
                raise RuntimeError("feed %s: %d %r" % (fid, st, data))
            self.feeds[fid] = {"type": ftype, "up": up, "objects": n, "expected": 0,
                               "active": None, "snapshot": None, "snap_count": 0,
                               "consumed_at": None, "last_req_check": 0.0}

    @staticmethod
    def stack_env(bin_dir):
        env = {"TF_ACCESSLOG": "off"}
        if os.path.basename(os.path.normpath(bin_dir)) == "asan":
            # ASan's quarantine of freed memory (256 MiB by default) would
            # grow every process's RSS for minutes: keep it small, so the
            # memory check sees our allocations.
            base = os.environ.get("ASAN_OPTIONS") or "detect_leaks=0:abort_on_error=1"
            env["ASAN_OPTIONS"] = base + ":quarantine_size_mb=8"
        return env

    def upstream(self, ftype, n):
        i = len(self.feeds)
        port_file = os.path.join(self.s.state_dir, "upstream-%d.port" % i)
        args = [sys.executable, UPSTREAM, "--port", "0", "--port-file", port_file, "--quiet",
                "--lifetime-s", str(int(self.duration) + 900), "--page-size", str(PAGE),
                "--page-delay-ms", "120"]
        if ftype in ("taxii21", "stix_bundle"):
            args += ["--objects", str(n)]
        if ftype == "otx":
            args += ["--otx-pulses", str(n)]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, preexec_fn=_pdeathsig)
        deadline = time.monotonic() + 30
        while not os.path.exists(port_file):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("upstream did not start")
            time.sleep(0.02)
        time.sleep(0.05)
        with open(port_file) as f:
            up = Upstream(proc, int(f.read()))
        # Map the upstream's request times (monotonic since its start) to
        # wall time: one data request of ours, bracketed by our clock.
        t0 = time.time()
        conn = http.client.HTTPConnection("127.0.0.1", up.port, timeout=10)
        conn.request("GET", "/bundles/generated.json")
        conn.getresponse().read()
        conn.close()
        t1 = time.time()
        t = up.ctl("stats")["bundle_requests"][0]["t"]
        up.offset = (t0 + t1) / 2 - t
        up.offset_err = (t1 - t0) / 2 + 0.001
        up.ctl("reset")
        return up

    # ---------------------------------------------------------------- API
    def api(self, method, path, body=None, check=True):
        """One API request; every answer is checked (api)."""
        self.fig["api_requests"] += 1
        try:
            st, hdrs, data = self.s.request(method, path, body, headers=AUTH, timeout=60)
        except (OSError, http.client.HTTPException) as e:
            if time.monotonic() < self.fault_until:
                self.fig["api_tolerated_errors"] += 1
                return None, None
            self.violation("api", "%s %s: %s (no fault in progress)" % (method, path, e))
        ok = st in SPEC_STATUSES and (st == 204 or st == 304 or isinstance(data, dict))
        if ok and st >= 400:
            ok = isinstance(data.get("error"), str) and data.get("code") in SPEC_CODES
        if self.mutate == "api" and st == 202:
            ok = False
        if not ok:
            if time.monotonic() < self.fault_until and st in (500, 502, 503, 504):
                self.fig["api_tolerated_errors"] += 1
                return None, None
            self.violation("api", "%s %s answered %s %r" % (method, path, st, str(data)[:300]))
        return st, data

    def cli(self, *args):
        return self.s.cli(*args, timeout=300)

    def map_bytes(self):
        """The LMDB map's size now (/api/metrics), None when not to be had."""
        req = urllib.request.Request(self.s.url("/api/metrics"), headers=AUTH)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                text = r.read().decode()
        except (OSError, http.client.HTTPException):
            return None
        m = re.search(r"^threatfeed_store_map_size_bytes (\d+)", text, re.M)
        return int(m.group(1)) if m else None

    # ---------------------------------------------------------------- processes
    def store_procs(self):
        """{pid: role} of supervisors and workers of this store."""
        out = {}
        needle = ("THREATFEED_DB=" + self.s.db_dir).encode()
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            argv = proc_cmdline(pid)
            if len(argv) < 2 or argv[1] not in (b"work", b"supervise"):
                continue
            try:
                with open("/proc/%s/environ" % pid, "rb") as f:
                    if needle not in f.read().split(b"\0"):
                        continue
            except OSError:
                continue
            st = proc_status(pid)
            if st and st[0] != "Z":
                out[int(pid)] = argv[1].decode()
        return out

    def fcgi_pids(self):
        pids = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                argv = proc_cmdline(pid)
                if argv and argv[0].endswith(b"threatfeed.fcgi"):
                    try:
                        with open("/proc/%s/environ" % pid, "rb") as f:
                            if ("THREATFEED_DB=" + self.s.db_dir).encode() in f.read().split(b"\0"):
                                pids.append(int(pid))
                    except OSError:
                        pass
        return pids

    def signal(self, pid, sig):
        try:
            os.kill(pid, sig)
            return True
        except ProcessLookupError:
            return False

    def resume_due(self, all_=False):
        with self.lock:
            for pid, (kind, until) in list(self.stopped.items()):
                if all_ or (until is not None and time.monotonic() >= until):
                    self.signal(pid, signal.SIGCONT)
                    del self.stopped[pid]
                    self.note("SIGCONT %s %d" % (kind, pid))

    def resumer(self):
        """SIGCONTs stopped processes on time, even while the driver waits
        on a request that a stopped process holds up."""
        n = 0
        while not self.done:
            self.resume_due()
            n += 1
            if n % 4 == 0:
                self.sample_slots()
            time.sleep(0.05)

    def sample_slots(self):
        """slots, sampled every 0.2 s (a step's check alone would miss short overlaps)."""
        workers = [p for p, r in self.store_procs().items() if r == "work"]
        self.max_workers = max(self.max_workers, len(workers))
        limit = MAX_RUNS - 1 if self.mutate == "slots" else MAX_RUNS
        if len(workers) > limit and self.slot_violation is None:
            self.slot_violation = "%d workers alive (max_concurrent_runs %d): %r" % (
                len(workers), MAX_RUNS, workers)

    # ---------------------------------------------------------------- steps
    def step(self):
        steps = [(self.do_consume, 25), (self.do_burst, 5), (self.do_cancel_task, 10), (self.do_cancel_feed, 8),
                 (self.do_kill_worker, 4), (self.do_kill_supervisor, 2), (self.do_kill_fcgi, 2),
                 (self.do_stop_worker, 4), (self.do_stop_supervisor, 1), (self.do_stop_fcgi, 1),
                 (self.do_restart_web, 1), (self.do_disk_fill, 1 if self.s.tmpfs else 0),
                 (self.do_clear_history, 2), (self.do_upstream_fault, 8), (self.do_grow, 5)]
        total = sum(w for _, w in steps)
        r = self.rng.uniform(0, total)
        for fn, w in steps:
            r -= w
            if r <= 0:
                break
        self.fig["operations"] += 1
        fn()

    def idle_feeds(self):
        return [f for f, d in self.feeds.items() if d["active"] is None]

    def active_tasks(self):
        return [t for t, r in self.tasks.items() if r["status"] not in TERMINAL]

    def do_consume(self):
        idle = self.idle_feeds()
        if not idle:
            return
        fid = self.rng.choice(idle)
        d = self.feeds[fid]
        # The snapshot the run must be rolled back to if it is cancel_job'd.
        d["snapshot"] = self.cli("export", fid).stdout
        d["snap_count"] = len([l for l in d["snapshot"].splitlines() if l.strip()])
        d["consumed_at"] = time.time()
        st, data = self.api("POST", "/api/threat-feeds/%s/consume/" % fid, {})
        if st == 202:
            tid = data["task_id"]
            self.tasks[tid] = {"feed": fid, "status": "queued", "cancel_at": None,
                               "cancel_mode": None, "seen_gone": None, "snapshot": d["snapshot"],
                               "snap_count": d["snap_count"], "consumed_at": d["consumed_at"]}
            d["active"] = tid
            self.fig["consumes"] += 1
            self.note("consume %s -> %s" % (fid, tid))
        elif st is None:
            # The answer was lost (a FastCGI process killed or stopped): the
            # run may exist all the same. Adopt it, so its counts are summed.
            self.adopt(fid, d)
        elif st == 409 and data.get("code") == "run_active":
            self.violation("api", "consume %s: 409 run_active but we know of no active run: %r"
                           % (fid, data))

    def adopt(self, fid, d):
        for _ in range(20):
            st, data = self.api("GET", "/api/threat-feeds/tasks/?feed_id=%s&limit=10" % fid)
            if st == 200:
                break
            time.sleep(0.5)
        else:
            self.violation("api", "no task listing for 10 s after a lost consume answer")
        for t in data["tasks"]:
            if t["task_id"] not in self.tasks and ts(t["created_at"]) >= d["consumed_at"] - 1:
                self.tasks[t["task_id"]] = {
                    "feed": fid, "status": "queued", "cancel_at": None, "cancel_mode": None,
                    "seen_gone": None, "snapshot": d["snapshot"], "snap_count": d["snap_count"],
                    "consumed_at": d["consumed_at"]}
                d["active"] = t["task_id"]
                self.fig["consumes"] += 1
                self.note("consume %s -> %s (adopted: the answer was lost)" % (fid, t["task_id"]))

    def do_burst(self):
        """Consume every idle feed at once: more runs than slots, so some queue."""
        for _ in range(len(self.idle_feeds())):
            self.do_consume()

    def _cancel(self, tid, mode, by_feed):
        r = self.tasks[tid]
        t0 = time.monotonic()
        if by_feed:
            st, data = self.api("POST", "/api/threat-feeds/%s/cancel_consumption/" % r["feed"],
                                {"mode": mode})
        else:
            st, data = self.api("POST", "/api/threat-feeds/cancel-task/%s/" % tid, {"mode": mode})
        ms = (time.monotonic() - t0) * 1000
        if st != 202:
            return
        self.cancel_api_ms.append(ms)
        if self.freeze_in_commit and ms > 5000:
            # Issue 14 §1: a cancel never waits behind a worker's write.
            self.violation("cancel_latency", "a cancel took %.0f ms to answer 202" % ms)
        kind = "cancels_%s_%s" % (mode, "feed" if by_feed else "task")
        if r["cancel_mode"] is not None:
            self.fig["cancels_repeated"] += 1
            if r["cancel_mode"] == "stop_now" and mode == "cancel_job":
                self.fig["cancels_raised"] += 1
        self.fig[kind] += 1
        if r["cancel_at"] is None:
            r["cancel_at"] = time.monotonic()
        if mode == "cancel_job" or r["cancel_mode"] is None:
            r["cancel_mode"] = mode
        self.note("cancel %s %s by %s (%.1f ms)" % (tid, mode, "feed" if by_feed else "task", ms))

    def do_cancel_task(self):
        self.cancel_some(False)

    def do_cancel_feed(self):
        self.cancel_some(True)

    def cancel_some(self, by_feed):
        """Cancel an active run; a third of the time again at once, by task
        or by feed, repeating the mode or raising stop_now to cancel_job."""
        act = self.active_tasks()
        if not act:
            return
        tid = self.rng.choice(act)
        self._cancel(tid, self.rng.choice(("stop_now", "cancel_job")), by_feed)
        if self.rng.random() < 0.33 and self.tasks[tid]["status"] not in TERMINAL:
            self._cancel(tid, self.rng.choice(("stop_now", "cancel_job")), self.rng.random() < 0.5)

    def _pick(self, role):
        """A random live process of `role`; with none, start a run and wait
        up to 3 s for one (so process faults meet processes)."""
        deadline = time.monotonic() + 3
        consumed = False
        while True:
            pids = [p for p, r in self.store_procs().items() if r == role and p not in self.stopped]
            if pids:
                return self.rng.choice(pids)
            if not consumed:
                self.do_consume()
                consumed = True
            if time.monotonic() > deadline:
                return None
            time.sleep(self.rng.uniform(0.05, 0.3))

    def do_kill_worker(self):
        pid = self._pick("work")
        if pid and self.signal(pid, signal.SIGKILL):
            self.fig["kills_worker"] += 1
            self.note("SIGKILL worker %d" % pid)

    def do_kill_supervisor(self):
        pid = self._pick("supervise")
        if pid and self.signal(pid, signal.SIGKILL):
            self.fig["kills_supervisor"] += 1
            self.note("SIGKILL supervisor %d" % pid)

    def do_kill_fcgi(self):
        pids = self.fcgi_pids()
        if pids:
            pid = self.rng.choice(pids)
            self.fault_until = time.monotonic() + 5
            if self.signal(pid, signal.SIGKILL):
                self.fig["kills_fcgi"] += 1
                self.note("SIGKILL fcgi %d" % pid)

    def do_stop_worker(self):
        pid = self._pick("work")
        if not pid:
            return
        if self.freeze_in_commit:
            # Left stopped at whatever instant: a cancel must still end the
            # run (the supervisor escalates after the grace period).
            with self.lock:
                self.signal(pid, signal.SIGSTOP)
                self.stopped[pid] = ("worker", time.monotonic() + 60)
            tid = next((t for t in self.active_tasks()
                        if run_processes(t).get("work") == pid), None)
            if tid:
                self._cancel(tid, self.rng.choice(("stop_now", "cancel_job")), False)
        else:
            # Bounded: until issue 14 §1 lands, a worker stopped inside a
            # commit holds the writer lock; the cancel latency shows it.
            with self.lock:
                self.signal(pid, signal.SIGSTOP)
                self.stopped[pid] = ("worker", time.monotonic() + self.rng.uniform(0.2, 1.5))
        self.fig["stops_worker"] += 1
        self.note("SIGSTOP worker %d" % pid)

    def do_stop_supervisor(self):
        pid = self._pick("supervise")
        with self.lock:
            if pid and self.signal(pid, signal.SIGSTOP):
                self.stopped[pid] = ("supervisor", time.monotonic() + self.rng.uniform(0.2, 3))
                self.fig["stops_supervisor"] += 1
                self.note("SIGSTOP supervisor %d" % pid)

    def do_stop_fcgi(self):
        pids = [p for p in self.fcgi_pids() if p not in self.stopped]
        if pids:
            pid = self.rng.choice(pids)
            until = time.monotonic() + self.rng.uniform(0.2, 2)
            self.fault_until = max(self.fault_until, until + 5)
            with self.lock:
                self.signal(pid, signal.SIGSTOP)
                self.stopped[pid] = ("fcgi", until)
            self.fig["stops_fcgi"] += 1
            self.note("SIGSTOP fcgi %d" % pid)

    def do_restart_web(self):
        with self.lock:
            for pid, (kind, _) in list(self.stopped.items()):
                if kind == "fcgi":
                    self.signal(pid, signal.SIGCONT)
                    del self.stopped[pid]
        self.fault_until = time.monotonic() + 60
        self.s.restart_web()
        self.fault_until = time.monotonic() + 3
        self.fig["web_restarts"] += 1
        self.note("web server restarted")

    def do_disk_fill(self):
        st = os.statvfs(self.s.db_dir)
        free = st.f_bavail * st.f_frsize
        filler = os.path.join(self.s.db_dir, "filler")
        keep = self.rng.choice((0, 16 << 10, 256 << 10))
        try:
            with open(filler, "wb") as f:
                chunk = b"\0" * (1 << 20)
                left = max(0, free - keep)
                while left > 0:
                    left -= f.write(chunk[:min(left, len(chunk))])
        except OSError:
            pass
        self.fig["disk_fills"] += 1
        self.note("disk filled (%d bytes left)" % keep)
        hold = time.monotonic() + self.rng.uniform(1, 4)
        while time.monotonic() < hold:
            self.check()
            time.sleep(0.3)
        os.unlink(filler)
        self.note("disk freed")

    def do_clear_history(self):
        # Every task finished before the last full scan began was seen
        # terminal by it: clear only those.
        if self.last_scan_at is None:
            return
        st, data = self.api("DELETE", "/api/threat-feeds/tasks/?finished_before=%s"
                            % now_rfc3339(self.last_scan_at))
        if st == 200:
            self.fig["history_clears"] += 1
            self.note("history cleared: %r" % data)

    def do_upstream_fault(self):
        fid = self.rng.choice(list(self.feeds))
        up = self.feeds[fid]["up"]
        nxt = up.ctl("stats")["next_page"]
        page = nxt + self.rng.randrange(0, 4)
        kind = self.rng.choice(("delay", "stall", "status500", "status429", "truncate", "drip",
                                "bad_json", "none"))
        faults = {"delay": {"page_delay_ms": self.rng.choice((50, 200, 500))},
                  "stall": {"stall": {"page": page, "after_bytes": 100, "seconds": 30}},
                  "status500": {"status": {"page": page, "code": 500, "times": 2}},
                  "status429": {"status": {"page": page, "code": 429, "retry_after": 1}},
                  "truncate": {"truncate": {"page": page}},
                  "drip": {"drip": {"page": page, "bytes_per_s": 20000}},
                  "bad_json": {"bad_json": {"page": page}},
                  "none": {}}[kind]
        if kind != "delay" and self.rng.random() < 0.5:
            faults["page_delay_ms"] = self.rng.choice((0, 100, 300))
        up.ctl("faults", faults)
        self.fig["upstream_faults"] += 1
        self.note("upstream %s faults %r" % (fid, faults))

    def do_grow(self):
        fid = self.rng.choice([f for f, d in self.feeds.items() if d["type"] in ("taxii21", "otx")])
        d = self.feeds[fid]
        d["objects"] += 1000 if d["type"] == "taxii21" else 20
        d["up"].ctl("data", {"objects": d["objects"]} if d["type"] == "taxii21"
                    else {"otx_pulses": d["objects"]})
        self.fig["data_grows"] += 1
        self.note("upstream %s now %d" % (fid, d["objects"]))

    # ---------------------------------------------------------------- checks
    def check(self, final=False):
        self.fig["checks"] += 1
        self.resume_due()
        scan_at = time.time()
        st, data = self.api("GET", "/api/threat-feeds/tasks/?limit=1000")
        if st != 200:
            return
        self.last_scan_at = scan_at
        self.sample_slots()
        if self.slot_violation:
            self.violation("slots", self.slot_violation)
        listed = {t["task_id"]: t for t in data["tasks"]}
        for tid, r in list(self.tasks.items()):
            if r["status"] in TERMINAL:
                continue
            t = listed.get(tid)
            if t is None:
                st, t = self.api("GET", "/api/threat-feeds/task-status/%s/" % tid)
                if st != 200:
                    self.violation("orphan", "task %s not terminal and gone: %s %r" % (tid, st, t))
            self.observe(tid, r, t, final)
        self.sample_memory()
        self.scan_sanitizers()

    def observe(self, tid, r, t, final):
        r["status"] = t["status"]
        if t["status"] in ACTIVE:
            alive = run_processes(tid)
            if alive and self.mutate != "orphan":
                r["seen_gone"] = None
            elif r["seen_gone"] is None:
                r["seen_gone"] = time.monotonic()
            detect = 0 if self.mutate == "orphan" else self.detect_s
            if r["seen_gone"] is not None and time.monotonic() - r["seen_gone"] > detect:
                self.violation("orphan", "task %s %s with no process for %.0f s: %r"
                               % (tid, t["status"], time.monotonic() - r["seen_gone"], t))
        if t["status"] in TERMINAL:
            self.finished(tid, r, t)

    def finished(self, tid, r, t):
        fid = r["feed"]
        d = self.feeds[fid]
        d["active"] = None
        self.fig["runs_" + t["status"]] += 1
        if t.get("cancel") and t["cancel"].get("forced"):
            self.fig["runs_forced"] += 1
        if r["cancel_at"] is not None:
            self.cancel_end_s.append(time.monotonic() - r["cancel_at"])
        if t["status"] != "cancelled":
            d["expected"] += t["progress"]["indicators_created"]
        self.note("end %s %s %s created %d rolled_back %s error %r" % (
            fid, tid, t["status"], t["progress"]["indicators_created"], t.get("rolled_back"),
            t.get("error")))
        self.check_requests(fid, r, t)
        self.check_feed(fid, r, t)

    def check_requests(self, fid, r, t):
        """cursor and after_ack, from this feed's upstream request log."""
        d = self.feeds[fid]
        up = d["up"]
        stats = up.ctl("stats")
        logs = (stats["objects_requests"] + stats["otx_requests"] + stats["vt_requests"]
                + stats["bundle_requests"])
        mine = sorted((e for e in logs if e["t"] + up.offset >= r["consumed_at"] - up.offset_err),
                      key=lambda e: e["t"])
        if d["type"] == "taxii21" and mine:
            first = mine[0]
            n = r["snap_count"] + (1 if self.mutate == "cursor" else 0)
            want = stix_added_us(n - 1) if n else None
            got = parse_ts(first["added_after"]) if first.get("added_after") else None
            if got != want:
                self.violation("cursor", "feed %s run %s started at added_after %r with %d stored "
                               "(want object %d's date, %r)" % (fid, tid_of(r, t), first.get("added_after"),
                                                                 r["snap_count"], n - 1, want))
        ack = ts((t.get("cancel") or {}).get("acknowledged_at"))
        if ack is not None:
            if self.mutate == "after_ack":
                ack -= 2.0
            late = [e for e in mine if e["t"] + up.offset > ack + up.offset_err + 0.002]
            if late:
                self.violation("after_ack", "feed %s run %s: %d upstream requests after the cancel "
                               "was acknowledged at %s: %r" % (fid, tid_of(r, t), len(late),
                                                               t["cancel"]["acknowledged_at"], late[:3]))
        # The next run's requests start after this; keep the log short.
        up.ctl("reset")

    def check_feed(self, fid, r, t):
        """counts and rollback, for the now idle feed."""
        d = self.feeds[fid]
        export = self.cli("export", fid).stdout
        n = len([l for l in export.splitlines() if l.strip()])
        st, feed = self.api("GET", "/api/threat-feeds/%s/" % fid)
        if st != 200:
            return
        expected = d["expected"] + (1 if self.mutate == "counts" else 0)
        if not (n == feed["indicator_count"] == expected):
            self.violation("counts", "feed %s after %s (%s): export has %d records, "
                           "indicator_count %s, runs created %d"
                           % (fid, tid_of(r, t), t["status"], n, feed["indicator_count"], expected))
        if t["status"] == "cancelled":
            snap = r["snapshot"] + ("x" if self.mutate == "rollback" else "")
            if export != snap:
                self.violation("rollback", "feed %s: cancelled run %s did not restore the export "
                               "(%d records before, %d after)" % (fid, tid_of(r, t), r["snap_count"], n))

    def sample_memory(self):
        for pid in self.fcgi_pids():
            st = proc_status(pid)
            fds = fd_count(pid)
            if st is None or fds is None:
                continue
            rec = self.rss["fcgi"].setdefault(pid, {"born": time.monotonic(), "first": None,
                                                    "last": None, "fd_first": None, "fd_last": None})
            # The first 20 s are warm-up (allocator, store map, caches).
            if time.monotonic() - rec["born"] > 20 and rec["first"] is None:
                rec["first"], rec["fd_first"] = st[1], fds
            rec["last"], rec["fd_last"] = st[1], fds
        third = self.duration / 3
        el = time.monotonic() - self.started
        for pid, role in self.store_procs().items():
            if role == "work":
                st = proc_status(pid)
                if st:
                    if el < third:
                        self.rss["worker_first"].append(st[1])
                    elif el > 2 * third:
                        self.rss["worker_last"].append(st[1])

    def scan_sanitizers(self):
        for path in self.s._log_files():
            try:
                size = os.path.getsize(path)
            except OSError:
                continue
            off = self.fds.get(path, 0)
            if size <= off:
                continue
            with open(path, "r", errors="replace") as f:
                f.seek(off)
                text = f.read()
            self.fds[path] = size
            if SANITIZER_RE.search(text):
                self.violation("sanitizer", "report in %s" % path)

    # ---------------------------------------------------------------- end
    def quiesce(self):
        """Everything resumed, every run cancelled or finished, then the leak checks."""
        self.resume_due(all_=True)
        for f in self.feeds.values():
            f["up"].ctl("faults", {})
        deadline = time.monotonic() + 120
        while self.active_tasks():
            for tid in self.active_tasks():
                if self.tasks[tid]["cancel_mode"] is None:
                    self._cancel(tid, "stop_now", False)
            self.check(final=True)
            if time.monotonic() > deadline:
                self.violation("orphan", "tasks not terminal 120 s after the end: %r"
                               % self.active_tasks())
            time.sleep(0.3)
        deadline = time.monotonic() + 30
        while self.store_procs():
            if time.monotonic() > deadline:
                self.violation("leaks", "processes left with every task terminal: %r"
                               % self.store_procs())
            time.sleep(0.2)
        st, data = self.api("GET", "/api/threat-feeds/tasks/?active=1")
        if st == 200 and data["tasks"]:
            self.violation("leaks", "active/queued tasks left: %r" % data["tasks"])
        gc = json.loads(self.cli("gc").stdout)
        if gc["stale_undo_runs"] or gc["reaped"]:
            self.violation("leaks", "gc at the end found %r" % gc)
        for pid, rec in self.rss["fcgi"].items():
            if rec["first"] is None:
                continue
            if rec["fd_last"] > rec["fd_first"] + 4:
                self.violation("leaks", "FastCGI %d fds %d -> %d" % (pid, rec["fd_first"], rec["fd_last"]))
            if rec["last"] > rec["first"] * 1.5 + 32768:
                self.violation("memory", "FastCGI %d RSS %d kB -> %d kB" % (pid, rec["first"], rec["last"]))
        wf, wl = self.rss["worker_first"], self.rss["worker_last"]
        if wf and wl and max(wl) > max(wf) * 1.5 + 32768:
            self.violation("memory", "worker RSS max %d kB in the first third, %d kB in the last"
                           % (max(wf), max(wl)))

    def figures(self):
        out = [("seed", self.seed), ("duration_s", int(self.duration)),
               ("bin", self.s.bin_dir)]
        out += list(self.fig.items())
        out.append(("cancels", sum(v for k, v in self.fig.items() if k.startswith("cancels_")
                                   and k not in ("cancels_repeated", "cancels_raised"))))
        out.append(("kills", sum(v for k, v in self.fig.items() if k.startswith("kills_"))))
        out.append(("faults", sum(self.fig[k] for k in (
            "stops_worker", "stops_supervisor", "stops_fcgi", "web_restarts", "disk_fills",
            "upstream_faults"))))
        out.append(("max_concurrent_workers_seen", self.max_workers))
        # The map grows (doubling) under the handler's readers while the
        # checks run: start and end sizes show how often.
        out.append(("map_bytes_start", self.map_start))
        out.append(("map_bytes_end", self.map_bytes()))
        for name, vals, fmt in (("cancel_api_ms", self.cancel_api_ms, "%.1f"),
                                ("cancel_to_terminal_s", self.cancel_end_s, "%.2f")):
            if vals:
                v = sorted(vals)
                out.append((name + "_p50", fmt % statistics.median(v)))
                out.append((name + "_p99", fmt % v[min(len(v) - 1, int(len(v) * 0.99))]))
                out.append((name + "_max", fmt % v[-1]))
        long_lived = [r for r in self.rss["fcgi"].values() if r["first"] is not None]
        if long_lived:
            out.append(("rss_fcgi_start_kb", max(r["first"] for r in long_lived)))
            out.append(("rss_fcgi_end_kb", max(r["last"] for r in long_lived)))
        if self.rss["worker_first"]:
            out.append(("rss_worker_start_kb", max(self.rss["worker_first"])))
        if self.rss["worker_last"]:
            out.append(("rss_worker_end_kb", max(self.rss["worker_last"])))
        out.append(("freeze_in_commit", int(self.freeze_in_commit)))
        out.append(("disk_faults", "tmpfs %d MiB" % SoakStack.disk_mb if self.s.tmpfs else "off (not root)"))
        return out

    def run(self):
        self.last_scan_at = None
        rc = 0
        try:
            self.start()
            self.started = time.monotonic()
            threading.Thread(target=self.resumer, daemon=True).start()
            end = self.started + self.duration
            while time.monotonic() < end:
                self.step()
                self.check()
                time.sleep(self.rng.uniform(0.05, 0.5))
            self.quiesce()
        except Violation as e:
            rc = 1
            self.report_violation(str(e))
        except Exception:
            rc = 2
            self.report_violation("soak driver error:\n" + traceback.format_exc())
        finally:
            self.done = True
            self.resume_due(all_=True)
        for k, v in self.figures():
            print("%s: %s" % (k, v))
        print("log: %s" % self.log_path)
        self.teardown(keep=rc != 0)
        return rc

    def report_violation(self, msg):
        self.note("VIOLATION " + msg)
        print("VIOLATION %s" % msg)
        print("reproduce: SOAK_SEED=%d SOAK_S=%d make soak" % (self.seed, int(self.duration)))
        s = getattr(self, "s", None)
        if s is not None and s.db_dir:
            copy = os.path.join(self.out, "store-%d" % self.seed)
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(s.db_dir, copy, ignore=shutil.ignore_patterns("filler"))
            print("store copy: %s" % copy)
            print("state dir: %s" % s.state_dir)

    def teardown(self, keep):
        s = getattr(self, "s", None)
        if s is None:
            return
        for f in self.feeds.values():
            f["up"].proc.terminate()
        if not keep:
            s._note = lambda msg, force=False: None   # not "kept": removed below
        s.stop(keep=True)   # the tmpfs is unmounted before the state dir goes
        if getattr(s, "tmpfs", False):
            subprocess.run(["umount", "-l", s.db_dir], capture_output=True)
        if not keep and os.environ.get("TF_KEEP_TMP") != "1":
            shutil.rmtree(s.state_dir, ignore_errors=True)


def tid_of(r, t):
    return t["task_id"]


if __name__ == "__main__":
    sys.exit(Soak().run())
