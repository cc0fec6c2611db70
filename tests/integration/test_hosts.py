"""Two hosts out of namespaces (issue 13 §6): runs on a worker host, the API
on a web host, one PostgreSQL between them (tests/integration/hosts.py says
how they are built). Needs root; skipped without. It starts its own
PostgreSQL (listening on the worker host's link), so it runs once, in the
plain integration suite, whatever TF_IT_PG says.
"""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hosts import TwoHosts, missing  # noqa: E402
from runenv import COLLECTION, TERMINAL  # noqa: E402


@unittest.skipIf(missing(), missing() or "")
class TwoHostsTest(unittest.TestCase):
    """One store and one web host for the class; each test boots a fresh
    worker host."""

    @classmethod
    def setUpClass(cls):
        cls.hosts = TwoHosts(conf={"grace_period_s": 2})
        cls.stack, cls.host = cls.hosts.stack, cls.hosts.host

    @classmethod
    def tearDownClass(cls):
        cls.hosts.close()

    def tearDown(self):
        self.host.power_off()
        self.host.reconnect()

    # ---------------------------------------------------------------- helpers
    def boot_worker_host(self, *upstreams):
        return self.hosts.boot_worker_host(*upstreams)

    def api(self, method, path, body=None, want=None):
        status, _, data = self.stack.request(method, path, body)
        if want is not None:
            self.assertEqual(status, want, (method, path, data))
        return data

    def feed(self, fid, url):
        self.api("DELETE", "/api/threat-feeds/%s/" % fid)
        self.api("POST", "/api/threat-feeds/", {
            "id": fid, "name": fid, "type": "taxii21", "url": url,
            "collection": COLLECTION, "interval_s": 0, "enabled": True}, want=201)

    def consume(self, fid):
        return self.api("POST", "/api/threat-feeds/%s/consume/" % fid, {}, want=202)["task_id"]

    def wait(self, task_id, pred, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            t = self.stack.task(task_id)
            if pred(t):
                return t
            self.assertLess(time.monotonic(), deadline, t)
            time.sleep(0.02)

    def count(self, fid):
        return self.api("GET", "/api/threat-feeds/%s/" % fid, want=200)["indicator_count"]

    # ------------------------------------------------------------------ tests
    def test_runs_on_the_worker_host_and_cancels_cross_in_both_modes(self):
        fast, stalled, slow = self.boot_worker_host(
            ["--objects", "1200", "--page-size", "100"],
            ["--objects", "500", "--page-size", "100", "--page-delay-ms", "600000"],
            ["--objects", "3000", "--max-page-size", "50", "--page-delay-ms", "150"])

        # A whole run: enqueued here, started by the agent there.
        self.feed("fast", fast)
        t = self.wait(self.consume("fast"), lambda t: t["status"] in TERMINAL)
        self.assertEqual(t["status"], "completed", t)
        self.assertEqual(t["progress"]["objects_processed"], 1200, t)
        self.assertEqual(self.count("fast"), t["progress"]["indicators_created"])
        kept = self.count("fast")
        self.assertGreater(kept, 0)

        # stop_now while the worker waits on a transfer that never answers:
        # only the notification can wake it (no signal crosses hosts).
        self.feed("stalled", stalled)
        task = self.consume("stalled")
        self.wait(task, lambda t: t["status"] == "running" and t["stage"] == "fetching")
        time.sleep(0.3)  # inside the transfer
        t0 = time.monotonic()
        self.api("POST", "/api/threat-feeds/cancel-task/%s/" % task, {"mode": "stop_now"}, want=202)
        t = self.wait(task, lambda t: t["status"] in TERMINAL)
        waited = time.monotonic() - t0
        self.assertEqual(t["status"], "stopped", t)
        # Not a timing assert: a wake-up that missed would sit in the stalled
        # transfer until the grace period's SIGKILL, which says `forced`.
        self.assertFalse(t["cancel"]["forced"], t)
        sys.stderr.write("cross-host stop_now in a stalled transfer: %.1f ms\n" % (waited * 1000))

        # cancel_job after committed pages: the rollback is exact.
        self.feed("slow", slow)
        task = self.consume("slow")
        self.wait(task, lambda t: t["progress"]["pages_done"] >= 3)
        self.api("POST", "/api/threat-feeds/cancel-task/%s/" % task, {"mode": "cancel_job"},
                 want=202)
        t = self.wait(task, lambda t: t["status"] in TERMINAL)
        self.assertEqual(t["status"], "cancelled", t)
        self.assertGreater(t["rolled_back"], 0, t)
        self.assertEqual(self.count("slow"), 0)
        # The other feeds' data is untouched by the rollback.
        self.assertEqual(self.count("fast"), kept)

    def test_worker_host_killed_ends_its_run_worker_lost(self):
        slow, = self.boot_worker_host(
            ["--objects", "3000", "--max-page-size", "50", "--page-delay-ms", "200"])
        self.feed("k", slow)
        task = self.consume("k")
        self.wait(task, lambda t: t["progress"]["pages_done"] >= 2)
        self.host.power_off()
        # Its sessions closed with the host: the next read here ends the run.
        t = self.wait(task, lambda t: t["status"] in TERMINAL, timeout=60)
        self.assertEqual(t["status"], "failed", t)
        self.assertEqual(t["error"], "worker lost", t)
        stored = self.count("k")
        self.assertEqual(stored, t["progress"]["indicators_created"], t)
        self.assertEqual(stored % 50, 0, t)  # whole pages only
        self.assertIsNone(self.api("GET", "/api/threat-feeds/k/")["active_task_id"])

    def test_worker_host_cut_off_ends_its_run_after_keepalives(self):
        slow, = self.boot_worker_host(
            ["--objects", "3000", "--max-page-size", "50", "--page-delay-ms", "200"])
        self.feed("c", slow)
        task = self.consume("c")
        self.wait(task, lambda t: t["progress"]["pages_done"] >= 2)
        t0 = time.monotonic()
        self.host.cut()
        # Nothing is reset: the server's keepalives (README: about 10 s) end
        # the host's sessions and with them its leases.
        t = self.wait(task, lambda t: t["status"] in TERMINAL, timeout=120)
        sys.stderr.write("run of a cut-off host ended after %.1f s\n" % (time.monotonic() - t0))
        self.assertEqual(t["status"], "failed", t)
        self.assertEqual(t["error"], "worker lost", t)
        stored = self.count("c")
        self.assertEqual(stored % 50, 0, t)
        self.assertEqual(stored, t["progress"]["indicators_created"], t)


    def test_cancel_job_of_a_cut_off_host_rolls_back_once_its_lease_is_gone(self):
        slow, = self.boot_worker_host(
            ["--objects", "3000", "--max-page-size", "50", "--page-delay-ms", "200"])
        self.feed("j", slow)
        task = self.consume("j")
        self.wait(task, lambda t: t["progress"]["pages_done"] >= 2)
        self.host.cut()
        # Committed here; the worker cannot hear it, and its pages stay the
        # store's until its lease is gone: then the reaper rolls them back.
        self.api("POST", "/api/threat-feeds/cancel-task/%s/" % task, {"mode": "cancel_job"},
                 want=202)
        t = self.wait(task, lambda t: t["status"] in TERMINAL, timeout=120)
        self.assertEqual(t["status"], "cancelled", t)
        self.assertGreater(t["rolled_back"], 0, t)
        self.assertEqual(self.count("j"), 0)


if __name__ == "__main__":
    unittest.main()
