"""`make bench`: the figures of docs/SPEC.md §7, one `name: value unit` line each.

Everything runs on this machine over loopback: the test upstream, lighttpd
with the deploy config (plus the floor responder on /floor/ and a static file
of the task's size), the release build of the handler and workers. Speed is
measured here and never asserted by tests.
"""
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import http.client

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
from runenv import RunEnv, TERMINAL, COLLECTION, _pdeathsig, store_location  # noqa: E402

BUILD = os.path.join(REPO, os.environ.get("BUILD", "build"))
TRIALS = int(os.environ.get("BENCH_TRIALS", "60"))
INGEST_N = int(os.environ.get("BENCH_INGEST", "100000"))
INGEST_TRIALS = int(os.environ.get("BENCH_INGEST_TRIALS", "5"))


def out(name, value, unit):
    print("%s: %s %s" % (name, value, unit), flush=True)


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def parse_ts(text):
    # 2026-11-25T20:48:33.929226Z → seconds since the epoch
    import calendar
    base, frac = text.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + int(frac) / 1e6


class Web:
    """lighttpd with deploy/lighttpd/threatfeed.conf, plus /floor/."""

    def __init__(self, env, floor_task=None):
        self.env = env
        self.port = self._free_port()
        self.www = os.path.join(env.dir, "www")
        shutil.copytree(os.path.join(REPO, "www"), self.www)
        conf = os.path.join(env.dir, "bench-lighttpd.conf")
        with open(conf, "w") as f:
            f.write('include "%s"\n' % os.path.join(REPO, "deploy", "lighttpd", "threatfeed.conf"))
            if floor_task:
                f.write('fastcgi.server += ( "/floor/" => (( "bin-path" => "%s", "socket" => "%s",'
                        ' "max-procs" => 4, "check-local" => "disable", "bin-environment" =>'
                        ' ( "THREATFEED_DB" => "%s", "FLOOR_TASK" => "%s" ) )) )\n'
                        % (os.path.join(BUILD, "bench", "floor"), os.path.join(env.dir, "floor.sock"),
                           env.db, floor_task))
        wenv = dict(env.env, TF_PORT=str(self.port), TF_WWW=self.www, TF_STATE=env.dir, TF_DB=env.db,
                    TF_FCGI=os.path.join(BUILD, "threatfeed.fcgi"),
                    TF_WORKER=os.path.join(BUILD, "threatfeed"), TF_ACCESSLOG="off",
                    TF_FCGI_PROCS="4")
        if "THREATFEED_CONF" in env.env:
            wenv["TF_CONF"] = env.env["THREATFEED_CONF"]
        self.proc = subprocess.Popen(["lighttpd", "-D", "-f", conf], env=wenv,
                                     stdout=subprocess.DEVNULL, preexec_fn=_pdeathsig)
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.get("/api/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("bench: lighttpd did not come up")
            time.sleep(0.05)

    @staticmethod
    def _free_port():
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return port

    def request(self, method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, json.loads(data) if data[:1] in (b"{", b"[") else data

    def get(self, path):
        return self.request("GET", path)

    def task(self, task_id):
        return self.get("/api/threat-feeds/task-status/%s/" % task_id)[1]

    def wait(self, task_id, statuses, pred=None, timeout=120):
        deadline = time.monotonic() + timeout
        while True:
            t = self.task(task_id)
            if t["status"] in statuses and (pred is None or pred(t)):
                return t
            if time.monotonic() > deadline:
                raise SystemExit("bench: task stuck: %r" % t)
            time.sleep(0.001)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def wait_in_flight(up, n=1, timeout=30):
    deadline = time.monotonic() + timeout
    while up.ctl("stats")["in_flight"] < n:
        if time.monotonic() > deadline:
            raise SystemExit("bench: upstream transfer never started")
        time.sleep(0.002)


def cancel_trials(env, web, up, mode, trials):
    """Cancel a run whose worker sits in a stalled transfer; latency from the
    cancel request to finished_at in the store. Also restart latency."""
    lat, restart = [], []
    stall_page = 0 if mode == "stop_now" else 1
    for _ in range(trials):
        up.ctl("reset")
        up.ctl("faults", {"stall": {"page": stall_page, "after_bytes": 100, "seconds": 600,
                                    "times": -1}})
        t0 = time.time()
        status, body = web.request("POST", "/api/threat-feeds/bench/consume/", {})
        if status != 202:
            raise SystemExit("bench: consume answered %d %r" % (status, body))
        task = body["task_id"]
        t = web.wait(task, {"running"} | TERMINAL)
        if restart is not None and t.get("started_at"):
            restart.append((parse_ts(t["started_at"]) - t0) * 1000)
        wait_in_flight(up)
        if stall_page:
            web.wait(task, {"running"}, pred=lambda t: t["progress"]["pages_done"] >= 1)
        t0 = time.time()
        web.request("POST", "/api/threat-feeds/cancel-task/%s/" % task, {"mode": mode})
        t = web.wait(task, TERMINAL)
        expect = "stopped" if mode == "stop_now" else "cancelled"
        if t["status"] != expect or t["cancel"]["forced"]:
            raise SystemExit("bench: trial ended %s (forced=%s)" % (t["status"], t["cancel"]["forced"]))
        lat.append((parse_ts(t["finished_at"]) - t0) * 1000)
    return lat, restart


def bench_cancel():
    env = RunEnv(bin_dir=BUILD)
    try:
        up = env.upstream("--objects", "5000", "--page-size", "100")
        env.add_feed("bench", up)
        web = Web(env)
        try:
            lat, restart = cancel_trials(env, web, up, "stop_now", TRIALS)
            out("cancel_latency_p50_ms", "%.2f" % pct(lat, 50), "ms")
            out("cancel_latency_p99_ms", "%.2f" % pct(lat, 99), "ms")
            out("restart_after_cancel_ms", "%.2f" % statistics.median(restart), "ms")
            lat, _ = cancel_trials(env, web, up, "cancel_job", max(50, TRIALS // 2))
            out("cancel_job_latency_p99_ms", "%.2f" % pct(lat, 99), "ms")
        finally:
            web.stop()
    finally:
        env.close()


def wrk_run(url, seconds=8):
    """(req/s, p99 ms, requests) of one wrk run."""
    res = subprocess.run(["wrk", "-t2", "-c32", "-d%ds" % seconds, "--latency", url],
                         capture_output=True, text=True, timeout=seconds + 30)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", res.stdout).group(1))
    m = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", res.stdout)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", res.stdout)
    if non2xx:
        raise SystemExit("bench: %s answered errors: %s" % (url, res.stdout))
    n = int(re.search(r"(\d+) requests in", res.stdout).group(1))
    return rps, p99, n


def wrk(url, seconds=8):
    rps, p99, _ = wrk_run(url, seconds)
    return rps, p99


STATUS_ROUNDS = int(os.environ.get("BENCH_STATUS_ROUNDS", "9"))
STATUS_WRK_S = int(os.environ.get("BENCH_STATUS_S", "3"))


def children_cpu_s(web, prefix):
    """CPU seconds (user + system) used so far by lighttpd's children whose
    name starts with prefix: the FastCGI responders of one URL."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2:].split()
        if int(rest[1]) == web.proc.pid and comm.startswith(prefix):
            total += int(rest[11]) + int(rest[12])
    return total / float(os.sysconf("SC_CLK_TCK"))


def interleaved(web, urls, rounds, seconds):
    """{name: ([rps...], [p99...], [responder CPU µs per request...])}: each
    wrk measurement `rounds` times, in turn (a, b, c, a, b, c, ...), so a
    burst of load from whatever else runs on the machine falls on every URL
    alike and the medians compare. urls: {name: (url, responder name prefix
    or None)}. The CPU time per request is the steadier figure on a loaded
    machine: it does not count the time the responder waited for a core."""
    got = {name: ([], [], []) for name in urls}
    for _ in range(rounds):
        for name, (url, comm) in urls.items():
            cpu0 = children_cpu_s(web, comm) if comm else 0
            rps, p99, n = wrk_run(url, seconds)
            got[name][0].append(rps)
            got[name][1].append(p99)
            if comm:
                got[name][2].append((children_cpu_s(web, comm) - cpu0) * 1e6 / max(n, 1))
    return got


def bench_status():
    """status_rps against floor_rps (bench/floor.c: one store read, its bytes
    written) and static_rps (lighttpd serving the same bytes from a file),
    medians of BENCH_STATUS_ROUNDS interleaved wrk runs; the ratio is the
    median of each round's status/floor. `bench.py status` runs only this."""
    env = RunEnv(bin_dir=BUILD)
    try:
        up = env.upstream("--objects", "300", "--page-size", "100")
        env.add_feed("bench", up)
        task = env.consume("bench")
        env.wait(task, TERMINAL)
        body = env.cli("status", task).stdout.strip().encode()
        web = Web(env, floor_task=task)
        try:
            with open(os.path.join(web.www, "status.json"), "wb") as f:
                f.write(body)
            base = "http://127.0.0.1:%d" % web.port
            # metrics: the scrape reads a few keys (one per feed), the run
            # slots and the queue: it must cost no more than a status read.
            got = interleaved(web, {
                "status": (base + "/api/threat-feeds/task-status/%s/" % task, "threatfeed.fcg"),
                "floor": (base + "/floor/", "floor"),
                "static": (base + "/status.json", None),
                "metrics": (base + "/api/metrics", "threatfeed.fcg")}, STATUS_ROUNDS, STATUS_WRK_S)
            med = {name: (statistics.median(v[0]), statistics.median(v[1]))
                   for name, v in got.items()}
            ratios = [s / f for s, f in zip(got["status"][0], got["floor"][0])]
            for name, v in got.items():
                print("# %s rounds (req/s): %s" % (name, ", ".join("%.0f" % x for x in v[0])),
                      flush=True)
            for name in ("status", "floor", "metrics"):
                print("# %s responder CPU per request (us): %s"
                      % (name, ", ".join("%.1f" % x for x in got[name][2])), flush=True)
            print("# status/floor per round: %s" % ", ".join("%.2f" % x for x in ratios),
                  flush=True)
            out("status_rps", "%.0f" % med["status"][0], "req/s")
            out("status_p99_ms", "%.2f" % med["status"][1], "ms")
            out("floor_rps", "%.0f" % med["floor"][0], "req/s")
            out("floor_p99_ms", "%.2f" % med["floor"][1], "ms")
            out("status_floor_ratio", "%.2f" % statistics.median(ratios), "ratio")
            for name in ("status", "floor", "metrics"):
                out("%s_cpu_us_per_req" % name, "%.1f" % statistics.median(got[name][2]), "us")
            out("metrics_rps", "%.0f" % med["metrics"][0], "req/s")
            out("metrics_p99_ms", "%.2f" % med["metrics"][1], "ms")
            out("static_rps", "%.0f" % med["static"][0], "req/s")
            out("status_body_bytes", len(body), "bytes")
        finally:
            web.stop()
    finally:
        env.close()


def finished(env, task, poll_s, timeout=900):
    deadline = time.monotonic() + timeout
    while True:
        t = env.status(task)
        if t["status"] in TERMINAL:
            break
        if time.monotonic() > deadline:
            raise SystemExit("bench: run %s still %s after %d s" % (task, t["status"], timeout))
        time.sleep(poll_s)
    if t["status"] != "completed":
        raise SystemExit("bench: ingest ended %s: %s" % (t["status"], t.get("error")))
    return t


def timed_run(env, feed):
    """objects/s of one run, from its started_at to its finished_at. Polled
    every 100 ms, about what a dashboard costs, so the poller does not
    compete with the run for the two cores."""
    t = finished(env, env.consume(feed), 0.1)
    secs = parse_ts(t["finished_at"]) - parse_ts(t["started_at"])
    return t["progress"]["objects_processed"] / secs


def memory_run(env, feed):
    """(VmHWM MiB, peak RssAnon MiB) of one run's worker. VmHWM counts the
    store's mapped pages the worker read, which grow with the store, not with
    the worker; RssAnon is the worker's own memory (heap, stacks, LMDB's dirty
    pages), sampled every 5 ms. A separate run from timed_run: sampling
    /proc that often would slow the run it measures."""
    task = env.consume(feed)
    hwm = anon = 0
    pid, deadline = None, time.monotonic() + 10
    while pid is None and time.monotonic() < deadline:
        pid = env.run_processes(task).get("work")
    while pid:
        try:
            with open("/proc/%d/status" % pid) as f:
                text = f.read()
        except OSError:
            break  # the worker is gone: its last readings stand
        m = re.search(r"VmHWM:\s+(\d+) kB", text)
        hwm = max(hwm, int(m.group(1))) if m else hwm
        m = re.search(r"RssAnon:\s+(\d+) kB", text)
        anon = max(anon, int(m.group(1))) if m else anon
        time.sleep(0.005)
    finished(env, task, 0.05)
    return hwm / 1024.0, anon / 1024.0


def fresh_run(up, measure):
    """One run of a feed on up, into a store of its own."""
    env = RunEnv(bin_dir=BUILD)
    try:
        env.add_feed("f", up, options={"page_size": 1000})
        return measure(env, "f")
    finally:
        env.close()


def bench_ingest():
    host = RunEnv(bin_dir=BUILD)
    try:
        big = host.upstream("--objects", str(INGEST_N), "--page-size", "1000")
        # Each trial starts from an empty store, so the figure does not depend
        # on how many trials ran before. The median is the figure; all are shown.
        rates = sorted(fresh_run(big, timed_run) for _ in range(INGEST_TRIALS))
        print("# ingest runs (objects/s): %s" % ", ".join("%.0f" % r for r in rates), flush=True)
        out("ingest_objects_per_s", "%.0f" % statistics.median(rates), "objects/s")
        # Memory at 1x = the ingest feed and 10x its size: both well past the
        # few pages the worker holds at once, so "flat" is what is measured.
        huge = host.upstream("--objects", str(INGEST_N * 10), "--page-size", "1000", start_s=300)
        mem_1x = fresh_run(big, memory_run)
        mem_10x = fresh_run(huge, memory_run)
        out("worker_peak_rss_mb_1x", "%.1f" % mem_1x[0], "MiB")
        out("worker_peak_rss_mb_10x", "%.1f" % mem_10x[0], "MiB")
        out("worker_peak_anon_mb_1x", "%.1f" % mem_1x[1], "MiB")
        out("worker_peak_anon_mb_10x", "%.1f" % mem_10x[1], "MiB")
    finally:
        host.close()


def handler_processes(web):
    """pids of the FastCGI handlers lighttpd spawned."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == web.proc.pid and comm.startswith("threatfeed.fcg"):
            pids.append(int(d))
    return pids


def status_kb(pid, key):
    with open("/proc/%d/status" % pid) as f:
        m = re.search(r"%s:\s+(\d+) kB" % key, f.read())
    return int(m.group(1)) if m else 0


def bench_lookup():
    """GET /api/indicators/?value= of one value in an index of INGEST_N
    objects (every feed, the networks that could hold it probed too)."""
    env = RunEnv(bin_dir=BUILD)
    try:
        up = env.upstream("--objects", str(INGEST_N), "--page-size", "1000")
        env.add_feed("look", up, options={"page_size": 1000})
        finished(env, env.consume("look"), 0.2)
        web = Web(env)
        try:
            status, data = web.get("/api/indicators/?type=ipv4-addr&limit=500")
            if status != 200 or not data["indicators"]:
                raise SystemExit("bench: no indicators to look up: %r" % (data,))
            value = data["indicators"][-1]["value"]
            base = "http://127.0.0.1:%d" % web.port
            rps, p99 = wrk(base + "/api/indicators/?value=" + value)
            out("lookup_rps", "%.0f" % rps, "req/s")
            out("lookup_p99_ms", "%.2f" % p99, "ms")
        finally:
            web.stop()
    finally:
        env.close()


def bench_export():
    """GET /api/export?format=txt over the index of EXPORT_N objects: the
    time to the last byte, and the handler's memory (its peak RSS, which
    counts the store pages it read, and its own heap, RssAnon)."""
    n = int(os.environ.get("BENCH_EXPORT", "1000000"))
    env = RunEnv(bin_dir=BUILD)
    try:
        up = env.upstream("--objects", str(n), "--page-size", "1000", start_s=300)
        env.add_feed("exp", up, options={"page_size": 1000})
        finished(env, env.consume("exp"), 0.5, timeout=1800)
        web = Web(env)
        try:
            web.get("/api/health")
            pids = handler_processes(web)
            anon0 = {p: status_kb(p, "RssAnon") for p in pids}
            conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=600)
            t0 = time.monotonic()
            conn.request("GET", "/api/export?format=txt")
            resp = conn.getresponse()
            lines = total = 0
            anon_peak = 0
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                lines += chunk.count(b"\n")
                total += len(chunk)
                for p in pids:
                    anon_peak = max(anon_peak, status_kb(p, "RssAnon") - anon0.get(p, 0))
            secs = time.monotonic() - t0
            conn.close()
            if resp.status != 200:
                raise SystemExit("bench: export answered %d" % resp.status)
            out("export_txt_1m_s", "%.2f" % secs, "s")
            out("export_txt_lines", lines, "lines")
            out("export_txt_bytes", total, "bytes")
            out("export_handler_anon_growth_mb", "%.1f" % (anon_peak / 1024.0), "MiB")
        finally:
            web.stop()
    finally:
        env.close()


class _Up:
    """A feed URL for RunEnv.add_feed."""
    def __init__(self, url):
        self.url = url


def bench_taxii():
    """Our own taxii21 consumer reading INGEST_N objects from our own TAXII
    2.1 server (/taxii2/, through lighttpd) into a second feed of the same
    store: objects/s of that run (pages of 1000), the server's part being
    every page of the collection read and streamed by the handler."""
    env = RunEnv(bin_dir=BUILD)
    try:
        up = env.upstream("--objects", str(INGEST_N), "--page-size", "1000")
        env.add_feed("src", up, options={"page_size": 1000})
        finished(env, env.consume("src"), 0.2)
        web = Web(env)
        try:
            env.add_feed("mirror", _Up("http://127.0.0.1:%d/taxii2/" % web.port),
                         collection="src", options={"page_size": 1000})
            rate = timed_run(env, "mirror")
            n = env.feed("mirror").get("indicator_count")
            if n != INGEST_N:
                raise SystemExit("bench: the mirror holds %r records, not %d" % (n, INGEST_N))
            out("taxii_serve_objects_per_s", "%.0f" % rate, "objects/s")
        finally:
            web.stop()
    finally:
        env.close()


def bench_cross_host():
    """stop_now of a run on another host (tests/integration/hosts.py: the
    worker host in its own network and PID namespaces) during a stalled
    transfer, from the API's 202 to finished_at; and a consume's start
    through the agent. PostgreSQL only: it is what crosses hosts."""
    sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
    from hosts import TwoHosts, missing
    why = missing()
    if why:
        print("# cross_host: skipped (%s)" % why, flush=True)
        return
    hosts = TwoHosts(bin_dir=BUILD, conf={"grace_period_s": 5}, pg_fast=False)
    try:
        stalled, = hosts.boot_worker_host(["--objects", "500", "--page-size", "100",
                                           "--page-delay-ms", "600000"])
        web = hosts.stack
        web.request("POST", "/api/threat-feeds/", {
            "id": "bench", "name": "bench", "type": "taxii21", "url": stalled,
            "collection": COLLECTION, "interval_s": 0, "enabled": True})
        lat, restart = [], []
        for _ in range(max(50, TRIALS)):
            t0 = time.time()
            status, _, body = web.request("POST", "/api/threat-feeds/bench/consume/", {})
            if status != 202:
                raise SystemExit("bench: consume answered %d %r" % (status, body))
            task = body["task_id"]
            t = web.wait_task(task, {"running"}, timeout=60, interval=0.001)
            restart.append((parse_ts(t["started_at"]) - t0) * 1000)
            # The worker is up (its own connections made) and asks for the
            # first data page, which the upstream never answers.
            t = web.wait_task(task, {"running"}, timeout=60, interval=0.005)
            while t["stage"] != "fetching":
                t = web.task(task)
                time.sleep(0.005)
            time.sleep(0.1)
            t0 = time.time()
            web.request("POST", "/api/threat-feeds/cancel-task/%s/" % task, {"mode": "stop_now"})
            t = web.wait_task(task, TERMINAL, timeout=60, interval=0.001)
            if t["status"] != "stopped" or t["cancel"]["forced"]:
                raise SystemExit("bench: cross-host trial ended %s (forced=%s)"
                                 % (t["status"], t["cancel"]["forced"]))
            lat.append((parse_ts(t["finished_at"]) - t0) * 1000)
        out("cross_host_cancel_p50_ms", "%.2f" % pct(lat, 50), "ms")
        out("cross_host_cancel_p99_ms", "%.2f" % pct(lat, 99), "ms")
        out("cross_host_restart_ms", "%.2f" % statistics.median(restart), "ms")
    finally:
        hosts.close()


def bench_rollback():
    d = tempfile.mkdtemp(prefix="bench-rollback-", dir=os.path.join(REPO, "build"))
    try:
        loc = store_location(d, os.path.join(BUILD, "threatfeed"))
        res = subprocess.run([os.path.join(BUILD, "bench", "rollback"), loc], capture_output=True,
                             text=True, check=True)
        n, ms = res.stdout.split()
        out("rollback_100k_ms", ms, "ms")
    finally:
        shutil.rmtree(d, ignore_errors=True)


SCALE_FEEDS = int(os.environ.get("BENCH_SCALE_FEEDS", "1000"))
SCALE_TASKS = int(os.environ.get("BENCH_SCALE_TASKS", "100000"))
SCALE_TRIALS = int(os.environ.get("BENCH_SCALE_TRIALS", "100"))


def timed(web, method, path, body=None, want=200):
    t0 = time.perf_counter()
    status, data = web.request(method, path, body)
    ms = (time.perf_counter() - t0) * 1000
    if status != want:
        raise SystemExit("bench: %s %s answered %d %r" % (method, path, status, data))
    return ms, data


class _ScaleSide:
    """One store for bench_scale: populated with feeds x tasks, its own
    upstream (stalled for the cancel trials) and lighttpd."""

    def __init__(self, feeds, tasks):
        self.env = RunEnv(bin_dir=BUILD)
        self.web = None
        self.up = self.env.upstream("--objects", "5000", "--page-size", "100")
        t0 = time.monotonic()
        res = subprocess.run([os.path.join(BUILD, "bench", "populate"), self.env.db, self.up.url,
                              COLLECTION, str(feeds), str(tasks)],
                             capture_output=True, text=True, env=self.env.env)
        if res.returncode:
            raise SystemExit("bench: populate failed: %s" % res.stderr)
        self.feeds, self.tasks = (int(x) for x in res.stdout.split()[:2])
        self.populate_s = time.monotonic() - t0
        self.web = Web(self.env)
        _, data = timed(self.web, "GET", "/api/threat-feeds/")
        if len(data["feeds"]) != feeds:
            raise SystemExit("bench: %d feeds listed, not %d" % (len(data["feeds"]), feeds))
        self.oldest = [f["last_task_id"] for f in data["feeds"]]
        _, data = timed(self.web, "GET", "/api/threat-feeds/tasks/?limit=1000")
        self.newest = [t["task_id"] for t in data["tasks"]]
        self.target = "s%04d" % (feeds // 2)
        self.middle = "s%04d" % (feeds // 2) if feeds > 1 else None
        self.lat = {k: [] for k in ("feeds", "feeds_page", "tasks", "active", "status",
                                    "cancel_req", "cancel")}

    def reads(self, rnd):
        web, lat = self.web, self.lat
        lat["feeds"].append(timed(web, "GET", "/api/threat-feeds/")[0])
        # one page of 100 from the middle of the list (the baseline's one feed: its first page)
        lat["feeds_page"].append(timed(web, "GET", "/api/threat-feeds/?limit=100" + (
            "&cursor=" + self.middle if self.middle else ""))[0])
        lat["tasks"].append(timed(web, "GET", "/api/threat-feeds/tasks/?limit=100")[0])
        lat["active"].append(timed(web, "GET", "/api/threat-feeds/tasks/?active=1")[0])
        for _ in range(5):
            task = rnd.choice(self.oldest if rnd.random() < 0.5 else self.newest)
            lat["status"].append(timed(web, "GET", "/api/threat-feeds/task-status/%s/" % task)[0])

    def cancel(self):
        """A run of one feed among them, cancelled (stop_now) while it
        transfers: the cancel request's answer time, and the time to
        finished_at in the store as for cancel_latency."""
        web, up = self.web, self.up
        up.ctl("reset")
        up.ctl("faults", {"stall": {"page": 0, "after_bytes": 100, "seconds": 600, "times": -1}})
        _, body = timed(web, "POST", "/api/threat-feeds/%s/consume/" % self.target, {}, 202)
        task = body["task_id"]
        t = web.wait(task, {"running"} | TERMINAL)
        if t["status"] != "running":
            raise SystemExit("bench: scale run ended %s before its cancel: %s"
                             % (t["status"], t.get("error")))
        wait_in_flight(up)
        c0 = time.time()
        ms, _ = timed(web, "POST", "/api/threat-feeds/cancel-task/%s/" % task,
                      {"mode": "stop_now"}, 202)
        t = web.wait(task, TERMINAL)
        if t["status"] != "stopped":
            raise SystemExit("bench: scale cancel ended %s" % t["status"])
        self.lat["cancel_req"].append(ms)
        self.lat["cancel"].append((parse_ts(t["finished_at"]) - c0) * 1000)

    def close(self):
        if self.web:
            self.web.stop()
        self.env.close()


def bench_scale():
    """Issue 14 §4: a store of SCALE_FEEDS feeds and SCALE_TASKS finished
    tasks (bench/populate) beside a baseline store of one feed and one task,
    each behind its own lighttpd; trials alternate between the two, one
    request at a time: the feed list (whole, and one page of 100), the task list
    (newest 100, and ?active=1 as the dashboard polls it), one task's status
    (random among the newest and the oldest), and every third trial a consume
    + stop_now of one feed (see _ScaleSide.cancel). The baseline runs the
    same requests under the same load, so big/baseline says what the store's
    size costs even on a busy machine. The client is Python on the same
    cores: its own time is in every figure."""
    import random
    rnd = random.Random(14)
    big = base = None
    try:
        big = _ScaleSide(SCALE_FEEDS, SCALE_TASKS)
        out("scale_feeds", big.feeds, "feeds")
        out("scale_finished_tasks", big.tasks, "tasks")
        out("scale_populate_s", "%.1f" % big.populate_s, "s")
        base = _ScaleSide(1, 1)
        for i in range(SCALE_TRIALS):
            for side in ((big, base) if i % 2 else (base, big)):
                side.reads(rnd)
                if i % 3 == 0:
                    side.cancel()
        for key, name in (("feeds", "list_feeds"), ("feeds_page", "list_feeds_page"),
                          ("tasks", "list_tasks"),
                          ("active", "list_active"), ("status", "task_status"),
                          ("cancel_req", "cancel_request"), ("cancel", "cancel")):
            for side, prefix in ((big, "scale_"), (base, "scale_baseline_")):
                out(prefix + name + "_p50_ms", "%.2f" % pct(side.lat[key], 50), "ms")
                out(prefix + name + "_p99_ms", "%.2f" % pct(side.lat[key], 99), "ms")
        print("# scale: %d trials per store; %d status reads, %d cancels each" % (
            SCALE_TRIALS, len(big.lat["status"]), len(big.lat["cancel"])), flush=True)
        for side, prefix in ((big, "scale_"), (base, "scale_baseline_")):
            url = "http://127.0.0.1:%d/api/threat-feeds/task-status/%s/" % (
                side.web.port, rnd.choice(side.oldest))
            rps, p99 = wrk(url, seconds=5)
            out(prefix + "status_rps", "%.0f" % rps, "req/s")
            out(prefix + "status_wrk_p99_ms", "%.2f" % p99, "ms")
    finally:
        for side in (big, base):
            if side:
                side.close()


def with_postgres(fn):
    """STORE=postgres: the same figures on a PostgreSQL started for the bench
    (Debian's server, default durability: fsync and synchronous commits for
    the handler; the workers' lazy commits as with LMDB)."""
    d = tempfile.mkdtemp(prefix="threatfeed-bench-pg-")
    try:
        uri = subprocess.run([os.path.join(REPO, "scripts", "pg.sh"), "start", d],
                             capture_output=True, text=True, check=True).stdout.strip()
        os.environ["TF_IT_PG"] = uri
        fn()
    finally:
        subprocess.run([os.path.join(REPO, "scripts", "pg.sh"), "stop", d])


def main():
    store = os.environ.get("STORE") or "lmdb"
    print("# threatfeed bench on %s, %d cores; %d cancel trials; store %s" % (
        os.uname().nodename, os.cpu_count(), TRIALS, store), flush=True)
    # BENCH_ONLY=status (or `bench.py status`): just those parts.
    only = os.environ.get("BENCH_ONLY", "").replace(",", " ").split()
    which = sys.argv[1:] or only or ["cancel", "status", "ingest", "rollback", "lookup", "export",
                             "taxii", "scale"]
    if store == "postgres" and not sys.argv[1:] and not only:
        which.append("cross_host")

    def run_all():
        for name in which:
            globals()["bench_" + name]()
    if store == "postgres":
        with_postgres(run_all)
    elif store == "lmdb":
        run_all()
    else:
        raise SystemExit("bench: STORE must be lmdb or postgres")


if __name__ == "__main__":
    main()
