"""The deploy/ configs, end to end: for lighttpd, nginx (+ spawn-fcgi),
Apache (mod_proxy_fcgi) and Apache (mod_fcgid + .htaccess, mounted under a
prefix), start the stack and check the dashboard, the API through the server,
the server's own JSON errors, and a consume → cancel round trip against the
test upstream.  Bounded waits only; nothing here asserts speed.

Run: python3 -m unittest tests/integration/test_deploy.py  (TF_BIN_DIR=build/asan for ASan)
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stack import TERMINAL, Stack, missing_requirements  # noqa: E402

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
        # --demo: thousands of indicators over many slow pages, so a run is
        # still going when the test cancels it
        cls.stack = Stack(cls.server, upstream_args=["--demo"])
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


if __name__ == "__main__":
    unittest.main()
