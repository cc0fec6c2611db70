"""GET /api/metrics (README "Metrics", docs/SPEC.md "As implemented: metrics")
through a real lighttpd and the FastCGI handler, with real runs against the
test upstream, checked by the real Prometheus tools: `promtool check metrics`
on the output, and a Prometheus server started here that scrapes the handler
with the scrape token and answers a query for a counter a run moved.

Every expected count comes from what the run itself reports (its task's
progress, rolled_back, cancel.forced) or from what the test upstream says it
served, never from a constant."""
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.parse

from stack import REPO, TERMINAL, free_port, _child_setup
from runenv import run_processes
from test_api import ApiCase, TokenStack, handler_pids

API_TOKEN = "api-t0ken-for-metrics"
SCRAPE_TOKEN = "scrape-t0ken-for-metrics"
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
CODES = ("2xx", "3xx", "4xx", "429", "5xx", "error")

_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')


def parse(text):
    """{(name, frozenset(labels)): value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise AssertionError("not a sample line: %r" % line)
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(samples, name, **labels):
    """The sample's value, or None when the series is absent."""
    return samples.get((name, frozenset(labels.items())))


class MetricsCase(ApiCase):
    conf = {"api_token": API_TOKEN, "metrics_token": SCRAPE_TOKEN, "grace_period_s": 1}
    auth = {"Authorization": "Bearer " + API_TOKEN}
    stack_class = TokenStack

    def scrape(self, token=SCRAPE_TOKEN):
        status, h, body = self.req("GET", "/api/metrics", auth=False,
                                   headers={"Authorization": "Bearer " + token})
        self.assertEqual(status, 200, body)
        self.assertEqual(h.get("Content-Type"), TEXT_FORMAT)
        self.assertIsInstance(body, str)
        return body, parse(body)

    def feed_counter(self, samples, name, feed, **labels):
        v = value(samples, name, feed=feed, **labels)
        self.assertIsNotNone(v, "no series %s{feed=%s,%s}" % (name, feed, labels))
        return v

    def completed_run(self, feed_id, faults=None):
        """A run of feed_id against a fast upstream (plus faults), to the
        end; returns (task, upstream stats of that run alone)."""
        self.stack.upstream_ctl("reset", {})
        self.addCleanup(self.stack.upstream_ctl, "reset", {})
        cfg = {"page_delay_ms": 0}
        cfg.update(faults or {})
        self.stack.upstream_ctl("faults", cfg)
        t = self.wait(self.consume(feed_id))
        self.assertEqual(t["status"], "completed", t)
        return t, self.stack.upstream_ctl("stats", method="GET")


class Endpoint(MetricsCase):
    def test_auth(self):
        # No credential, a wrong one: the API's 401, as JSON.
        for hdrs in ({}, {"Authorization": "Bearer nope"}):
            status, h, data = self.req("GET", "/api/metrics", auth=False, headers=hdrs)
            self.assertEqual(status, 401, data)
            self.assertEqual(data["code"], "unauthorized")
            self.assertIn("Bearer", h.get("WWW-Authenticate", ""))
        # The scrape token and the API token both read the metrics.
        self.scrape(SCRAPE_TOKEN)
        self.scrape(API_TOKEN)
        # The scrape token opens nothing else.
        scrape = {"Authorization": "Bearer " + SCRAPE_TOKEN}
        for method, path, body in (("GET", "/api/health", None),
                                   ("GET", "/api/threat-feeds/", None),
                                   ("POST", "/api/threat-feeds/", self.stack.demo_feed("nope")),
                                   ("POST", "/api/metrics", None)):
            status, _, data = self.req(method, path, body=body, auth=False, headers=scrape)
            self.assertEqual(status, 401, (method, path, data))
        # HEAD has the headers and no body; other methods are 405.
        status, h, body = self.req("HEAD", "/api/metrics", auth=False, headers=scrape)
        self.assertEqual(status, 200)
        self.assertEqual(h.get("Content-Type"), TEXT_FORMAT)
        self.assertFalse(body)
        h, data = self.expect(405, "POST", "/api/metrics", code="method_not_allowed")
        self.assertEqual(h.get("Allow"), "GET, HEAD")

    def test_promtool_accepts_the_output(self):
        self.new_feed("lint")
        self.completed_run("lint")
        text, samples = self.scrape()
        self.assertEqual(value(samples, "threatfeed_build_info", version="0.1.0",
                               backend="postgresql" if os.environ.get("TF_IT_PG") else "lmdb"), 1)
        res = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                             capture_output=True, timeout=60)
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        self.assertEqual((res.stdout + res.stderr).strip(), "", "promtool found problems")
        # Every family has its HELP and TYPE, and the names follow the
        # conventions: counters end in _total, sizes in _bytes.
        types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
        helps = set(re.findall(r"^# HELP (\S+) ", text, re.M))
        self.assertEqual(set(types), helps)
        for name, kind in types.items():
            self.assertTrue(name.startswith("threatfeed_"), name)
            if kind == "counter":
                self.assertTrue(name.endswith("_total"), name)
        self.assertEqual(types["threatfeed_cancel_duration_seconds"], "histogram")
        self.assertEqual(types["threatfeed_store_size_bytes"], "gauge")
        self.assertGreater(value(samples, "threatfeed_store_size_bytes"), 0)


class Counters(MetricsCase):
    def test_a_feed_starts_at_zero(self):
        self.new_feed("zero")
        _, m = self.scrape()
        for status in ("completed", "failed", "stopped", "cancelled"):
            self.assertEqual(self.feed_counter(m, "threatfeed_runs_total", "zero",
                                               status=status), 0)
        for code in CODES:
            self.assertEqual(self.feed_counter(m, "threatfeed_upstream_requests_total", "zero",
                                               code=code), 0)
        # A deleted feed's series go with it.
        self.expect(204, "DELETE", "/api/threat-feeds/zero/")
        _, m = self.scrape()
        self.assertIsNone(value(m, "threatfeed_runs_total", feed="zero", status="completed"))

    def test_a_run_moves_its_feed_counters(self):
        self.new_feed("c1")
        self.new_feed("c2")
        _, before = self.scrape()
        # One 429 with Retry-After on the first objects page: retried.
        t, stats = self.completed_run("c1", {"status": {"page": 1, "code": 429,
                                                         "retry_after": 1}})
        _, m = self.scrape()
        p = t["progress"]
        fc = lambda name, **kw: self.feed_counter(m, name, "c1", **kw)
        self.assertEqual(fc("threatfeed_runs_total", status="completed"), 1)
        self.assertEqual(fc("threatfeed_runs_total", status="failed"), 0)
        self.assertEqual(fc("threatfeed_pages_total"), p["pages_done"])
        self.assertEqual(fc("threatfeed_objects_processed_total"), p["objects_processed"])
        self.assertEqual(fc("threatfeed_upstream_received_bytes_total"), p["bytes_received"])
        for result in ("created", "updated", "skipped"):
            self.assertEqual(fc("threatfeed_indicators_total", result=result),
                             p["indicators_" + result])
        self.assertGreater(p["indicators_created"], 0)
        # Requests as the upstream counted them, the 429 among them.
        answered_429 = sum(1 for q in stats["objects_requests"] if q["status"] == 429)
        self.assertEqual(answered_429, 1, stats["objects_requests"])
        self.assertEqual(fc("threatfeed_upstream_requests_total", code="429"), answered_429)
        self.assertEqual(sum(fc("threatfeed_upstream_requests_total", code=c) for c in CODES),
                         stats["total_requests"])
        # The other feed did not move; the global gauges are back at rest.
        for (name, labels), v in before.items():
            if ("feed", "c2") in labels:
                self.assertEqual(m[(name, labels)], v, name)
        # A finished run holds its slot until its processes are gone.
        deadline = time.monotonic() + 30
        while value(m, "threatfeed_runs_active") != 0:
            self.assertLess(time.monotonic(), deadline, "the run's slot was never freed")
            time.sleep(0.1)
            _, m = self.scrape()
        self.assertEqual(value(m, "threatfeed_runs_queued"), 0)

    def test_counters_survive_handler_restarts(self):
        self.new_feed("h1")
        self.completed_run("h1")
        text, m = self.scrape()
        pids = handler_pids(self.stack)
        self.assertTrue(pids)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            status, _, _ = self.req("GET", "/api/health")
            new = set(handler_pids(self.stack))
            if status == 200 and new and not new & set(pids):
                break
            self.assertLess(time.monotonic(), deadline, "handlers did not come back")
            time.sleep(0.2)
        _, again = self.scrape()
        mine = {k: v for k, v in m.items() if ("feed", "h1") in k[1]}
        self.assertTrue(mine)
        self.assertEqual({k: again[k] for k in mine}, mine)
        self.assertEqual(mine[("threatfeed_runs_total",
                               frozenset({("feed", "h1"), ("status", "completed")}))], 1)


class Cancels(MetricsCase):
    """Runs against the slow upstream, cancelled while they fetch."""

    def hist(self, samples, mode):
        return (value(samples, "threatfeed_cancel_duration_seconds_count", mode=mode),
                value(samples, "threatfeed_cancel_duration_seconds_sum", mode=mode),
                value(samples, "threatfeed_cancel_duration_seconds_bucket", mode=mode, le="+Inf"))

    def running(self, feed_id, pages=1):
        task = self.consume(feed_id)
        self.stack.wait_task(task, statuses={"running"} | TERMINAL, headers=self.auth)
        deadline = time.monotonic() + 60
        while self.task(task)["progress"]["pages_done"] < pages:
            self.assertLess(time.monotonic(), deadline, "no page committed")
            time.sleep(0.05)
        return task

    def test_stop_now_and_cancel_job(self):
        self.new_feed("k1")
        self.new_feed("k2")
        _, m0 = self.scrape()
        task = self.running("k1")
        self.expect(202, "POST", "/api/threat-feeds/cancel-task/%s/" % task, {"mode": "stop_now"})
        # Repeated: 202 while it stops, 409 once it stopped (a quick stop
        # wins the race); counted once either way.
        status, _, data = self.req("POST", "/api/threat-feeds/cancel-task/%s/" % task,
                                   body={"mode": "stop_now"})
        self.assertIn(status, (202, 409), data)
        t1 = self.wait(task)
        self.assertEqual(t1["status"], "stopped", t1)
        task = self.running("k2")
        self.expect(202, "POST", "/api/threat-feeds/k2/cancel_consumption/", {"mode": "cancel_job"})
        t2 = self.wait(task)
        self.assertEqual(t2["status"], "cancelled", t2)
        self.assertGreater(t2["rolled_back"], 0)
        self.expect(409, "POST", "/api/threat-feeds/cancel-task/%s/" % task, {"mode": "stop_now"})

        _, m = self.scrape()
        fc = self.feed_counter
        # A repeated request changes nothing and is not counted.
        self.assertEqual(fc(m, "threatfeed_cancel_requests_total", "k1", mode="stop_now"), 1)
        self.assertEqual(fc(m, "threatfeed_cancel_requests_total", "k1", mode="cancel_job"), 0)
        self.assertEqual(fc(m, "threatfeed_cancel_requests_total", "k2", mode="cancel_job"), 1)
        self.assertEqual(fc(m, "threatfeed_runs_total", "k1", status="stopped"), 1)
        self.assertEqual(fc(m, "threatfeed_runs_total", "k2", status="cancelled"), 1)
        self.assertEqual(fc(m, "threatfeed_rollback_records_total", "k1"), 0)
        self.assertEqual(fc(m, "threatfeed_rollback_records_total", "k2"), t2["rolled_back"])
        self.assertEqual(fc(m, "threatfeed_worker_kills_total", "k1"), 0)
        # One observation per mode; the +Inf bucket is the count.
        for mode in ("stop_now", "cancel_job"):
            c0, s0, _ = self.hist(m0, mode)
            c1, s1, inf = self.hist(m, mode)
            self.assertEqual(c1, c0 + 1, mode)
            self.assertEqual(inf, c1, mode)
            self.assertGreater(s1, s0, mode)

    def test_a_killed_worker_is_counted(self):
        """A worker frozen (SIGSTOP) in a stalled transfer ignores the cancel;
        the supervisor kills it after the grace period: cancel.forced."""
        self.new_feed("w1")
        self.stack.upstream_ctl("reset", {})
        self.addCleanup(self.stack.upstream_ctl, "reset", {})
        self.stack.upstream_ctl("faults", {"page_delay_ms": 0,
                                           "stall": {"page": 2, "after_bytes": -1,
                                                     "seconds": 120}})
        task = self.running("w1", pages=2)
        deadline = time.monotonic() + 30
        while self.stack.upstream_ctl("stats", method="GET")["in_flight"] < 1:
            self.assertLess(time.monotonic(), deadline, "the stalled page was never requested")
            time.sleep(0.01)
        time.sleep(0.3)
        pid = run_processes(task)["work"]
        os.kill(pid, signal.SIGSTOP)
        self.expect(202, "POST", "/api/threat-feeds/cancel-task/%s/" % task, {"mode": "stop_now"})
        t = self.wait(task, timeout=60)
        self.assertEqual(t["status"], "stopped", t)
        self.assertTrue(t["cancel"]["forced"], t)
        _, m = self.scrape()
        self.assertEqual(self.feed_counter(m, "threatfeed_worker_kills_total", "w1"), 1)
        self.assertEqual(self.feed_counter(m, "threatfeed_runs_total", "w1", status="stopped"), 1)


class PrometheusScrape(MetricsCase):
    """A real Prometheus scraping the handler through lighttpd on loopback,
    every second, with the scrape token in its scrape config."""
    prom = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not shutil.which("prometheus"):
            cls.tearDownClass()
            raise unittest.SkipTest("prometheus is not installed (scripts/deps.sh test)")
        cls.prom_dir = tempfile.mkdtemp(prefix="prometheus-",
                                        dir=os.path.join(REPO, "build", "test-tmp"))
        cls.prom_port = free_port()
        conf = os.path.join(cls.prom_dir, "prometheus.yml")
        with open(conf, "w") as f:
            f.write(PROM_CONFIG % {"port": cls.stack.port, "token": SCRAPE_TOKEN})
        cls.prom_log = open(os.path.join(cls.prom_dir, "prometheus.log"), "wb")
        cls.prom = subprocess.Popen(
            ["prometheus", "--config.file=" + conf,
             "--storage.tsdb.path=" + os.path.join(cls.prom_dir, "data"),
             "--web.listen-address=127.0.0.1:%d" % cls.prom_port, "--log.level=warn"],
            stdout=cls.prom_log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_child_setup(os.getpid(), None))

    @classmethod
    def tearDownClass(cls):
        if cls.prom is not None:
            cls.prom.terminate()
            try:
                cls.prom.wait(20)
            except subprocess.TimeoutExpired:
                cls.prom.kill()
                cls.prom.wait(5)
            cls.prom_log.close()
            if not os.environ.get("TF_KEEP_TMP"):
                shutil.rmtree(cls.prom_dir, ignore_errors=True)
        super().tearDownClass()

    def query(self, expr):
        """The instant vector of expr: [(labels, value)]; [] while Prometheus
        is not up yet."""
        conn = http.client.HTTPConnection("127.0.0.1", self.prom_port, timeout=10)
        try:
            conn.request("GET", "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
            resp = conn.getresponse()
            data = json.loads(resp.read())
        except (OSError, http.client.HTTPException, ValueError):
            return []
        finally:
            conn.close()
        self.assertEqual(data.get("status"), "success", data)
        return [(r["metric"], float(r["value"][1])) for r in data["data"]["result"]]

    def wait_value(self, expr, want, timeout=90):
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            self.assertIsNone(self.prom.poll(), "prometheus exited: %s" % self.prom_log_tail())
            got = self.query(expr)
            if len(got) == 1 and got[0][1] == want:
                return got[0][0]
            time.sleep(0.25)
        self.fail("%s: %r after %ss, wanted %s\n%s" % (expr, got, timeout, want,
                                                       self.prom_log_tail()))

    def prom_log_tail(self):
        with open(os.path.join(self.prom_dir, "prometheus.log"), "rb") as f:
            return f.read()[-3000:].decode(errors="replace")

    def test_prometheus_sees_a_run_complete(self):
        self.new_feed("prom")
        self.wait_value('up{job="threatfeed"}', 1)
        expr = 'threatfeed_runs_total{job="threatfeed",feed="prom",status="completed"}'
        labels = self.wait_value(expr, 0)
        self.assertEqual(labels["instance"], "127.0.0.1:%d" % self.stack.port)
        t, _ = self.completed_run("prom")
        self.wait_value(expr, 1)
        self.wait_value('threatfeed_indicators_total{feed="prom",result="created"}',
                        t["progress"]["indicators_created"])


PROM_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: threatfeed
    metrics_path: /api/metrics
    authorization:
      type: Bearer
      credentials: %(token)s
    static_configs:
      - targets: ["127.0.0.1:%(port)d"]
"""


if __name__ == "__main__":
    unittest.main()
