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
import os
import time
import unittest

from test_api import ApiCase
from test_webhooks import Receiver

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


def task_processes(task_id):
    """Pids of live processes with task_id in their argv: the run's
    supervisor, which becomes the webhook sender once the run has ended."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
            with open("/proc/%s/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except (OSError, IndexError):
            continue
        if task_id.encode() in argv:
            found.append(int(pid))
    return found


class WebhookRefused(ApiCase):
    """A run-end webhook to a denied address (the receiver on 127.0.0.1,
    loopback denied): the sender refuses it before connecting and gives up
    at once, so once the run's processes are gone the receiver has nothing.
    (The run fails too: its upstream is on loopback; a failed run has a
    webhook like any other.)"""

    @classmethod
    def setUpClass(cls):
        cls.receiver = Receiver()
        cls.conf = {"upstream_deny": "127.0.0.0/8", "webhook_url": cls.receiver.url,
                    "webhook_attempts": "3"}
        try:
            super().setUpClass()
        except BaseException:
            cls.receiver.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.receiver.close()
        super().tearDownClass()

    def test_not_delivered(self):
        self.new_feed("hooked")
        task_id = self.consume("hooked")
        task = self.wait(task_id)
        self.assertEqual(task["status"], "failed", task)
        self.assertIn(DENIED % "127.0.0.1", task.get("error") or "", task)
        # the supervisor outlives the terminal state: it becomes the sender
        deadline = time.monotonic() + 60
        while task_processes(task_id):
            self.assertLess(time.monotonic(), deadline, "the run's sender never ended")
            time.sleep(0.1)
        self.assertEqual(self.receiver.deliveries(task_id), [])


if __name__ == "__main__":
    unittest.main()
