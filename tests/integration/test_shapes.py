"""The JSON shapes of docs/SPEC.md §2 through the real API (lighttpd + handler +
workers): every feed answer (POST, GET, list, PATCH) of every feed type, with
and without its optional fields, has exactly the feed's fields — null when
unset, never `secret`; every task answer (task-status, the tasks list, the
202 of a cancel) has exactly the task's fields in every state, queued to
terminal. The expected key sets are written out here from docs/SPEC.md, not taken
from the code. Runs that must stay active are held by a stalled upstream
(never by timing); every wait is bounded generously and nothing asserts speed.
"""
import json
import time
import unittest

from stack import COLLECTION, TERMINAL
from test_api import ApiCase

SECRET = "s3cret-shape-XYZZY"

# docs/SPEC.md §2 feed fields, plus the options object and our created_at/updated_at.
FEED_KEYS = {"id", "name", "type", "url", "collection", "username", "has_secret", "proxy",
             "no_proxy", "proxy_username", "has_proxy_secret", "ca_pem", "client_cert_pem",
             "has_client_key", "enabled",
             "interval_s", "options", "last_task_id", "last_status", "last_run_at",
             "active_task_id", "indicator_count", "created_at", "updated_at"}
# The options each type reads (README "Feed types and their options").
OPTION_KEYS = {
    "taxii21": {"page_size", "grace_period_s", "ttl_days"},
    "otx": {"page_size", "grace_period_s", "ttl_days"},
    "virustotal": {"targets", "requests_per_minute", "grace_period_s", "ttl_days"},
    "stix_bundle": {"grace_period_s", "ttl_days"},
}
TASK_KEYS = {"task_id", "feed_id", "status", "stage", "message", "progress", "cancel",
             "rolled_back", "error", "warnings", "created_at", "started_at", "updated_at",
             "finished_at"}
PROGRESS_KEYS = {"percent", "pages_done", "pages_total", "objects_processed",
                 "indicators_created", "indicators_updated", "indicators_skipped",
                 "bytes_received"}
CANCEL_KEYS = {"mode", "requested_at", "requested_by", "acknowledged_at", "forced"}
ACTIVE = frozenset(("queued", "running", "stopping", "cancelling"))
STALL = {"stall": {"page": 0, "after_bytes": -1, "seconds": 600}}


class ShapeCase(ApiCase):
    """The API test stack (test_api.ApiCase, which also checks every error
    answer's shape) with a small upstream."""
    upstream_args = ["--objects", "200"]

    def answer(self, status, method, path, body=None):
        """The JSON of an answer that must have this status."""
        return self.expect(status, method, path, body)[1]

    def assert_feed(self, feed, what):
        self.assertEqual(set(feed), FEED_KEYS, (what, feed))
        self.assertEqual(set(feed["options"]), OPTION_KEYS[feed["type"]], (what, feed))
        self.assertNotIn(SECRET, json.dumps(feed), what)
        self.assertNotIn("XYZZY", json.dumps(feed), what)

    def assert_task(self, task, status, what):
        self.assertEqual(set(task), TASK_KEYS, (what, task))
        self.assertEqual(set(task["progress"]), PROGRESS_KEYS, (what, task))
        if task["cancel"] is not None:
            self.assertEqual(set(task["cancel"]), CANCEL_KEYS, (what, task))
        self.assertIsInstance(task["warnings"], list, what)
        if isinstance(status, str):
            self.assertEqual(task["status"], status, (what, task))
        else:
            self.assertIn(task["status"], status, (what, task))


class FeedShapes(ShapeCase):
    """Every feed type, without and with its optional fields, through every
    answer that carries a feed."""

    def bodies(self):
        up = self.stack.upstream_url
        base = up.rsplit("/taxii2/", 1)[0]
        minimal = {
            "taxii21": {"type": "taxii21", "url": up, "collection": COLLECTION},
            "otx": {"type": "otx", "url": base},
            "virustotal": {"type": "virustotal", "url": base},
            "stix_bundle": {"type": "stix_bundle", "url": base + "/bundles/generated.json"},
        }
        full_options = {
            "taxii21": {"page_size": 100, "grace_period_s": 3, "ttl_days": 30},
            "otx": {"page_size": 20, "grace_period_s": 0, "ttl_days": 1},
            "virustotal": {"targets": ["198.51.100.7", "example.com"],
                           "requests_per_minute": 4, "grace_period_s": 10, "ttl_days": 90},
            "stix_bundle": {"grace_period_s": 1, "ttl_days": 3650},
        }
        for ftype, body in minimal.items():
            yield ftype, False, dict(body, name="min " + ftype)
            full = dict(body, name="full " + ftype, username="user", secret=SECRET,
                        enabled=False, interval_s=3600, options=full_options[ftype])
            full.setdefault("collection", "unused-" + ftype)
            yield ftype, True, full

    def check_values(self, feed, body, full):
        for k in ("name", "type", "url"):
            self.assertEqual(feed[k], body[k], feed)
        self.assertEqual(feed["collection"], body.get("collection"), feed)
        self.assertEqual(feed["username"], body.get("username"), feed)
        self.assertIs(feed["has_secret"], full, feed)
        self.assertIs(feed["enabled"], not full, feed)
        self.assertEqual(feed["interval_s"], 3600 if full else 0, feed)
        for k in OPTION_KEYS[feed["type"]]:
            self.assertEqual(feed["options"][k], body.get("options", {}).get(k), feed)
        for k in ("last_task_id", "last_status", "last_run_at", "active_task_id"):
            self.assertIsNone(feed[k], feed)
        self.assertEqual(feed["indicator_count"], 0, feed)

    def test_every_type_through_every_answer(self):
        n = 0
        for ftype, full, body in self.bodies():
            n += 1
            fid = "shape-%d" % n
            with self.subTest(type=ftype, full=full):
                made = self.answer(201, "POST", "/api/threat-feeds/", dict(body, id=fid))
                self.assert_feed(made, "POST")
                self.check_values(made, body, full)
                read = self.answer(200, "GET", "/api/threat-feeds/%s/" % fid)
                self.assert_feed(read, "GET")
                self.assertEqual(read, made)
                listed = self.answer(200, "GET", "/api/threat-feeds/")
                self.assertEqual(set(listed), {"feeds"})
                for f in listed["feeds"]:
                    self.assert_feed(f, "list")
                self.assertIn(made, listed["feeds"])
                renamed = self.answer(200, "PATCH", "/api/threat-feeds/%s/" % fid,
                                      {"name": "renamed"})
                self.assert_feed(renamed, "PATCH")
                self.assertEqual(renamed["name"], "renamed")
                # what was read, nulls included, is a valid PATCH body
                back = self.answer(200, "PATCH", "/api/threat-feeds/%s/" % fid, read)
                self.assert_feed(back, "PATCH (read back)")
                self.check_values(back, body, full)

    def test_clearing_optional_fields_leaves_them_null(self):
        self.answer(201, "POST", "/api/threat-feeds/",
                    self.stack.demo_feed("clear", username="u", secret=SECRET,
                                         options={"page_size": 5}))
        cleared = self.answer(200, "PATCH", "/api/threat-feeds/clear/",
                              {"username": None, "secret": None, "options": {}})
        self.assert_feed(cleared, "PATCH clearing")
        self.assertIsNone(cleared["username"])
        self.assertIs(cleared["has_secret"], False)
        self.assertEqual(cleared["options"], {"page_size": None, "grace_period_s": None,
                                              "ttl_days": None})
        # a type change shows the new type's options
        bundle = self.answer(200, "PATCH", "/api/threat-feeds/clear/",
                             {"type": "stix_bundle", "collection": None})
        self.assert_feed(bundle, "PATCH type")
        self.assertIsNone(bundle["collection"])


class TaskShapes(ShapeCase):
    """One run slot, so a second run stays queued; a run is held `running` by
    an upstream that stalls before answering its objects request, until it is
    cancelled (no timing involved)."""
    conf = {"max_concurrent_runs": 1, "grace_period_s": 5}

    def setUp(self):
        self.stack.upstream_ctl("reset", {})
        self.stack.upstream_ctl("faults", STALL)
        self.addCleanup(self.stack.upstream_ctl, "reset", {})

    def consume(self, feed_id):
        data = self.answer(202, "POST", "/api/threat-feeds/%s/consume/" % feed_id)
        self.assertEqual(set(data), {"task_id", "feed_id", "status", "status_url"}, data)
        return data["task_id"]

    def task(self, task_id, status, what):
        """task-status and the task's entry in the tasks list (and in the
        active list while it is active)."""
        t = self.answer(200, "GET", "/api/threat-feeds/task-status/%s/" % task_id)
        self.assert_task(t, status, what)
        queries = ["limit=100"] + (["active=1"] if t["status"] in ACTIVE else [])
        for q in queries:
            listed = self.answer(200, "GET", "/api/threat-feeds/tasks/?" + q)
            self.assertEqual(set(listed), {"tasks"})
            mine = [x for x in listed["tasks"] if x["task_id"] == task_id]
            self.assertEqual(len(mine), 1, (q, listed))
            self.assert_task(mine[0], t["status"], "%s (list ?%s)" % (what, q))
        return t

    def cancel(self, task_id, mode, statuses, what):
        """The 202 answer of a cancel is a task too."""
        t = self.answer(202, "POST", "/api/threat-feeds/cancel-task/%s/" % task_id,
                        {"mode": mode})
        self.assert_task(t, statuses, what)
        self.assertEqual(t["cancel"]["mode"], mode, t)
        return t

    def hold(self, feed_id):
        """A run of feed_id, running and inside the stalled objects request
        (so the stall, which fires once, is spent on it)."""
        task = self.consume(feed_id)
        self.wait(task, lambda t: t["status"] in TERMINAL or (
            t["status"] == "running"
            and self.stack.upstream_ctl("stats", method="GET")["in_flight"] > 0))
        return task

    def wait(self, task_id, pred=lambda t: t["status"] in TERMINAL):
        deadline = time.monotonic() + 90
        while True:
            t = self.stack.task(task_id)
            if pred(t):
                return t
            self.assertLess(time.monotonic(), deadline, t)
            time.sleep(0.05)

    def test_queued_running_cancelled_completed_failed(self):
        st = self.stack
        self.answer(201, "POST", "/api/threat-feeds/", st.demo_feed("held"))
        self.answer(201, "POST", "/api/threat-feeds/", st.demo_feed("waits"))

        held = self.hold("held")
        self.task(held, "running", "running")
        self.assert_feed(self.answer(200, "GET", "/api/threat-feeds/held/"), "feed during a run")

        waits = self.consume("waits")
        self.task(waits, "queued", "queued")
        # cancelled while queued: ends at once, never fetches
        self.cancel(waits, "cancel_job", {"cancelling", "cancelled"}, "cancel_job, queued")
        self.wait(waits)
        self.task(waits, "cancelled", "cancelled while queued")

        self.cancel(held, "cancel_job", {"cancelling", "cancelled"}, "cancel_job, running")
        self.wait(held)
        t = self.task(held, "cancelled", "cancelled while running")
        self.assertIsInstance(t["cancel"]["requested_at"], str)

        # completed (the stall fired once; the next run's requests are answered)
        done = self.consume("waits")
        self.wait(done)
        self.task(done, "completed", "completed")
        feed = self.answer(200, "GET", "/api/threat-feeds/waits/")
        self.assert_feed(feed, "feed after a run")
        self.assertEqual((feed["last_task_id"], feed["last_status"]), (done, "completed"))

        # failed: an otx feed without an API key fails before any request
        self.answer(201, "POST", "/api/threat-feeds/",
                    {"id": "nokey", "name": "no key", "type": "otx", "url": "http://127.0.0.1:9/"})
        bad = self.consume("nokey")
        self.wait(bad)
        t = self.task(bad, "failed", "failed")
        self.assertIsInstance(t["error"], str)
        self.assertIsNone(t["cancel"])

    def test_stopping_and_stopped(self):
        self.answer(201, "POST", "/api/threat-feeds/", self.stack.demo_feed("stops"))
        task = self.hold("stops")
        self.task(task, "running", "running")
        self.cancel(task, "stop_now", {"stopping", "stopped"}, "stop_now, running")
        self.wait(task)
        self.task(task, "stopped", "stopped")


if __name__ == "__main__":
    unittest.main()
