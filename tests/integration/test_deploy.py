"""The deploy/ configs, end to end: for lighttpd, nginx (+ spawn-fcgi),
Apache (mod_proxy_fcgi) and Apache (mod_fcgid + .htaccess, mounted under a
prefix), start the stack and check the dashboard, the API through the server,
the server's own JSON errors, and a consume → cancel round trip against the
test upstream.  Bounded waits only; nothing here asserts speed.

Also scripts/run.sh (`make run`): up, demo feed, Ctrl-C, again; busy port.

Run: python3 -m unittest tests/integration/test_deploy.py  (TF_BIN_DIR=build/asan for ASan)
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stack import (ASAN_ENV, REPO, TERMINAL, TMP_ROOT, Stack, free_port,  # noqa: E402
                   missing_requirements)

JSON_WRITE = {"Content-Type": "application/json"}


class DeployMixin:
    server = None
    stack = None
    _failed = False

    @classmethod
    def setUpClass(cls):
        why = missing_requirements(cls.server)
        if why:
            raise unittest.SkipTest("%s: %s" % (cls.server, why))
        # --demo: thousands of objects over slow pages (capped at 100 objects
        # whatever limit the worker asks for), so a run is still going when
        # the test cancels it
        cls.stack = Stack(cls.server, upstream_args=["--demo", "--max-page-size", "100"])
        cls.stack.start()

    @classmethod
    def tearDownClass(cls):
        if cls.stack is not None:
            cls.stack.stop(keep=True if cls._failed else None)

    def run(self, result=None):
        # keep the state dir of a class with a failing test for inspection
        result = result if result is not None else self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        super().run(result)
        if len(result.failures) + len(result.errors) > before:
            type(self)._failed = True
        return result

    def req(self, method, path, body=None, headers=None):
        return self.stack.request(method, path, body=body, headers=headers)

    def assertJsonError(self, status, headers, data, code):
        self.assertEqual(status, code, data)
        self.assertIn("json", headers.get("Content-Type", ""), (status, data))
        self.assertIsInstance(data, dict, data)
        self.assertIsInstance(data.get("error"), str, data)
        self.assertIsInstance(data.get("code"), str, data)

    # ------------------------------------------------------------------
    def test_dashboard(self):
        status, headers, body = self.req("GET", "/")
        self.assertEqual(status, 200, body)
        self.assertIn("text/html", headers.get("Content-Type", ""))
        self.assertIn("<html", str(body).lower())

    def test_health(self):
        status, headers, data = self.req("GET", "/api/health")
        self.assertEqual(status, 200, data)
        self.assertIn("application/json", headers.get("Content-Type", ""))
        self.assertEqual(data.get("status"), "ok", data)

    def test_taxii_server_reached(self):
        # /taxii2/ goes to the same handler (deploy configs), with a query
        taxii = {"Accept": "application/taxii+json;version=2.1"}
        status, headers, data = self.req("GET", "/taxii2/", headers=taxii)
        self.assertEqual(status, 200, data)
        self.assertEqual(headers.get("Content-Type"), "application/taxii+json;version=2.1")
        self.assertEqual(data["api_roots"], [self.stack.url("/taxii2/root/")], data)
        status, _, data = self.req("GET", "/taxii2/root/collections/?x=1", headers=taxii)
        self.assertEqual(status, 200, data)
        self.assertTrue(data["collections"], data)
        status, _, data = self.req("GET", "/taxii2/root/collections/none/objects/?limit=x",
                                   headers=taxii)
        self.assertEqual((status, data.get("http_status")), (400, "400"), data)

    def test_unknown_route_is_json_404(self):
        status, headers, data = self.req("GET", "/api/no-such-route/")
        self.assertJsonError(status, headers, data, 404)

    def test_body_over_64k_is_json_413(self):
        # refused by the web server (or the handler): either way the API's shape
        body = '{"name":"%s"}' % ("x" * (64 * 1024 + 1))
        status, headers, data = self.req("POST", "/api/threat-feeds/", body=body,
                                         headers=JSON_WRITE)
        self.assertJsonError(status, headers, data, 413)

    def test_round_trip_consume_cancel(self):
        s = self.stack
        feed_id = "deploy-%s" % self.server.replace("apache-", "")
        status, _, feed = self.req("POST", "/api/threat-feeds/", body=s.demo_feed(feed_id))
        self.assertEqual(status, 201, feed)
        self.assertEqual(feed.get("id"), feed_id, feed)
        self.assertNotIn("secret", feed)

        status, _, data = self.req("GET", "/api/threat-feeds/")
        self.assertEqual(status, 200, data)
        self.assertIn(feed_id, [f.get("id") for f in data.get("feeds", [])])

        status, _, started = self.req("POST", "/api/threat-feeds/%s/consume/" % feed_id,
                                      body={}, headers=JSON_WRITE)
        self.assertEqual(status, 202, started)
        task_id = started.get("task_id")
        self.assertTrue(task_id, started)
        self.assertEqual(started.get("feed_id"), feed_id, started)
        self.assertEqual(started.get("status"), "queued", started)

        task = s.wait_task(task_id, statuses=TERMINAL | {"running"}, timeout=60)
        status, _, cancelled = self.req("POST", "/api/threat-feeds/cancel-task/%s/" % task_id,
                                        body={"mode": "stop_now"})
        if task["status"] in TERMINAL:
            # the run finished before we could cancel it (slow machine, fast
            # upstream): a cancel of a finished task is a 409
            self.assertEqual(status, 409, cancelled)
        else:
            self.assertEqual(status, 202, cancelled)
            self.assertEqual(cancelled.get("task_id"), task_id, cancelled)
            self.assertIn(cancelled.get("status"), {"stopping", "stopped", "completed"}, cancelled)

        task = s.wait_task(task_id, timeout=90)
        self.assertIn(task["status"], {"stopped", "completed"}, task)
        if task["status"] == "stopped":
            self.assertEqual((task.get("cancel") or {}).get("mode"), "stop_now", task)
        self.assertIsNone(task.get("error"), task)

        status, _, data = self.req("GET", "/api/threat-feeds/%s/" % feed_id)
        self.assertEqual(status, 200, data)
        self.assertFalse(data.get("active_task_id"), data)

        # the same store is reachable with the CLI
        out = s.cli("feed", "show", feed_id)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn(feed_id, out.stdout)

    def test_zz_no_sanitizer_reports(self):
        # runs last (alphabetical): nothing the stack ran so far reported
        self.assertEqual(self.stack.scan_sanitizer_reports(), [])


class LighttpdDeploy(DeployMixin, unittest.TestCase):
    server = "lighttpd"


class NginxDeploy(DeployMixin, unittest.TestCase):
    server = "nginx"


class ApacheProxyFcgiDeploy(DeployMixin, unittest.TestCase):
    server = "apache"


class ApacheFcgidDeploy(DeployMixin, unittest.TestCase):
    server = "apache-fcgid"

    def test_mounted_under_prefix(self):
        self.assertTrue(self.stack.prefix, "apache-fcgid runs under a mount prefix")
        self.assertTrue(self.stack.base_url.endswith(self.stack.prefix + "/"))


class MakeRunScript(unittest.TestCase):
    """scripts/run.sh (what `make run` runs after the build): up, demo feed
    registered, Ctrl-C stops everything, and a second run right after works."""

    def setUp(self):
        why = missing_requirements("lighttpd")
        if why:
            self.skipTest(why)
        self.bin_dir = os.path.abspath(os.path.join(REPO, os.environ.get("TF_BIN_DIR") or "build"))
        os.makedirs(TMP_ROOT, exist_ok=True)
        self.state = tempfile.mkdtemp(prefix="make-run-", dir=TMP_ROOT)
        self.procs = []
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if not self._failed_here():
            shutil.rmtree(self.state, ignore_errors=True)

    def _failed_here(self):
        outcome = getattr(self, "_outcome", None)
        return bool(outcome is not None and not getattr(outcome, "success", True))

    def _start(self, port):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "THREATFEED_"))}
        env.update(PORT=str(port), STATE_DIR=self.state, BUILD=self.bin_dir)
        if os.path.basename(self.bin_dir) == "asan":
            env.update(ASAN_ENV)
        p = subprocess.Popen([os.path.join(REPO, "scripts", "run.sh")], env=env, cwd=REPO,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.procs.append(p)
        lines = []
        deadline = time.monotonic() + 60
        for line in p.stdout:
            lines.append(line)
            if "Ctrl-C stops everything" in line or time.monotonic() > deadline:
                break
        out = "".join(lines)
        self.assertIn("threatfeed is up: http://127.0.0.1:%d/" % port, out)
        self.assertIn("no API token is configured", out)
        self.assertIn("TAXII 2.1 server (read-only, one collection per feed): "
                      "http://127.0.0.1:%d/taxii2/" % port, out)
        return p, out

    def _stop(self, p):
        p.send_signal(signal.SIGINT)
        rest = p.communicate(timeout=60)[0]
        self.assertIn("threatfeed stopped", rest)
        self.assertEqual(p.returncode, 130, rest)
        # nothing that used the store is left
        left = [pid for pid in os.listdir("/proc") if pid.isdigit() and self._uses_store(pid)]
        self.assertEqual(left, [], "processes left on the store")
        return rest

    def _uses_store(self, pid):
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                return ("THREATFEED_DB=%s/db" % self.state).encode() in f.read().split(b"\0")
        except OSError:
            return False

    def _get(self, port, path):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, json.loads(r.read() or b"null")
        finally:
            conn.close()

    def test_up_demo_feed_ctrl_c_and_again(self):
        port = free_port()
        p, _ = self._start(port)
        status, health = self._get(port, "/api/health")
        self.assertEqual(status, 200, health)
        status, feed = self._get(port, "/api/threat-feeds/demo/")
        self.assertEqual(status, 200, feed)
        self.assertEqual(feed.get("name"), "Demo TAXII 2.1")
        self.assertTrue(feed.get("url", "").startswith("http://127.0.0.1:"), feed)
        # the TAXII server lists the demo feed's collection
        status, cols = self._get(port, "/taxii2/root/collections/")
        self.assertEqual(status, 200, cols)
        self.assertIn("demo", [c["id"] for c in cols["collections"]], cols)
        self._stop(p)

        # the port is free again at once, the state dir is reused
        p, _ = self._start(port)
        status, feeds = self._get(port, "/api/threat-feeds/")
        self.assertEqual(status, 200, feeds)
        self.assertEqual([f["id"] for f in feeds["feeds"]].count("demo"), 1, feeds)
        self._stop(p)

    def test_busy_port_is_refused_clearly(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            env = dict(os.environ, PORT=str(port), STATE_DIR=self.state, BUILD=self.bin_dir)
            r = subprocess.run([os.path.join(REPO, "scripts", "run.sh")], env=env, cwd=REPO,
                               capture_output=True, text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("port %d is in use — try make run PORT=%d" % (port, port + 1), r.stderr)


if __name__ == "__main__":
    unittest.main()
