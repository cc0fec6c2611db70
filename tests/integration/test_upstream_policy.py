"""Which addresses feeds may reach (README "Which addresses feeds may reach";
issue 14 §4): the address policy through the real stack. The check is made on
the address a worker connects to, before the socket exists, so naming
169.254.169.254 here sends no packet anywhere: the run fails with the
policy's error, test_connection says the same, a redirect from an allowed
upstream to a denied address is refused at the hop, and an operator's
upstream_deny of loopback keeps a run (reached through the host name
"localhost") from ever reaching the test upstream: its request log stays
empty.
"""
import unittest

from test_api import ApiCase

DENIED = "upstream address %s is not allowed (upstream_deny)"


class DefaultPolicy(ApiCase):
    """The built-in deny list; loopback allowed (the test upstream works)."""

    def setUp(self):
        self.fast_upstream()

    def test_link_local_url(self):
        self.new_feed("meta", url="http://169.254.169.254/taxii2/")
        self.addCleanup(self.req, "DELETE", "/api/threat-feeds/meta/")
        task = self.wait(self.consume("meta"))
        self.assertEqual(task["status"], "failed", task)
        self.assertIn(DENIED % "169.254.169.254", task.get("error") or "", task)
        _, probe = self.expect(200, "POST", "/api/threat-feeds/meta/test_connection/", {})
        self.assertFalse(probe["ok"], probe)
        self.assertIn(DENIED % "169.254.169.254", probe["detail"], probe)

    def test_redirect_to_denied(self):
        self.new_feed("hop")
        self.addCleanup(self.req, "DELETE", "/api/threat-feeds/hop/")
        self.stack.upstream_ctl("faults", {"page_delay_ms": 0, "redirect": {
            "location": "http://169.254.169.254/latest/meta-data/", "code": 302}})
        task = self.wait(self.consume("hop"))
        self.assertEqual(task["status"], "failed", task)
        self.assertIn(DENIED % "169.254.169.254", task.get("error") or "", task)

    def test_loopback_allowed(self):
        self.new_feed("loop")
        self.addCleanup(self.req, "DELETE", "/api/threat-feeds/loop/")
        task = self.wait(self.consume("loop"))
        self.assertEqual(task["status"], "completed", task)


class LoopbackDenied(ApiCase):
    """An operator's upstream_deny of loopback: names resolving to it are
    refused too, and the upstream never sees a request."""
    conf = {"upstream_deny": "127.0.0.0/8, ::1/128"}

    def test_never_reaches_upstream(self):
        self.stack.upstream_ctl("reset", {})
        url = self.stack.upstream_url.replace("127.0.0.1", "localhost")
        self.assertIn("localhost", url)
        self.new_feed("local", url=url)
        task = self.wait(self.consume("local"))
        self.assertEqual(task["status"], "failed", task)
        err = task.get("error") or ""
        self.assertTrue(DENIED % "127.0.0.1" in err or DENIED % "::1" in err, task)
        _, probe = self.expect(200, "POST", "/api/threat-feeds/local/test_connection/", {})
        self.assertFalse(probe["ok"], probe)
        self.assertIn("is not allowed (upstream_deny)", probe["detail"], probe)
        stats = self.stack.upstream_ctl("stats", method="GET")
        self.assertEqual(stats["total_requests"], 0, stats)


if __name__ == "__main__":
    unittest.main()
