"""The REST API (docs/SPEC.md §2) through a real lighttpd and the FastCGI handler
(deploy/lighttpd/threatfeed.conf, ASan binaries under `make test`).

Every non-2xx answer is checked for the error shape {"error","code"} by the
request helper itself. Tests that only need the API never wait for a run to
finish; the ones that need a run (cancel round trips, indicators, pollers)
say so and use a slow upstream so the run is still active when they act.
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

from stack import REPO, Stack, TERMINAL

ACTIVE = frozenset(("queued", "running", "stopping", "cancelling"))
JSON = {"Content-Type": "application/json"}
UUID_ZERO = "00000000-0000-4000-8000-000000000000"

# A run of 3000 objects in pages of 50 with 150 ms per page lasts ~9 s:
# long enough to act on it while it is active, short enough to finish.
SLOW_UPSTREAM = ["--objects", "3000", "--max-page-size", "50", "--page-delay-ms", "150"]


def bin_dir():
    return os.environ.get("TF_BIN_DIR", "build/asan")


class ApiCase(unittest.TestCase):
    """One stack per class; helpers that enforce the error contract."""
    conf = {}
    upstream_args = SLOW_UPSTREAM
    fcgi_procs = 2
    auth = {}          # headers added to every request
    stack_class = Stack

    @classmethod
    def setUpClass(cls):
        cls.stack = cls.stack_class("lighttpd", bin_dir=bin_dir(), conf=cls.conf,
                          upstream_args=cls.upstream_args, fcgi_procs=cls.fcgi_procs)
        cls.stack.start()

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()
        if cls.stack.sanitizer_reports:
            raise AssertionError("sanitizer reports: %s" % cls.stack.sanitizer_reports[:5])

    # -- helpers -------------------------------------------------------------
    def req(self, method, path, body=None, headers=None, auth=True):
        hdrs = dict(self.auth) if auth else {}
        hdrs.update(headers or {})
        status, h, data = self.stack.request(method, path, body=body, headers=hdrs)
        if status >= 400:
            self.assertIn("application/json", h.get("Content-Type", ""), (status, data))
            self.assertIsInstance(data, dict, (method, path, status, data))
            self.assertIsInstance(data.get("error"), str, data)
            self.assertIsInstance(data.get("code"), str, data)
        return status, h, data

    def expect(self, status, method, path, body=None, headers=None, code=None):
        got, h, data = self.req(method, path, body=body, headers=headers)
        self.assertEqual(got, status, (method, path, data))
        if code is not None:
            self.assertEqual(data.get("code"), code, data)
        return h, data

    def new_feed(self, feed_id, **fields):
        _, feed = self.expect(201, "POST", "/api/threat-feeds/", self.stack.demo_feed(feed_id, **fields))
        return feed

    def consume(self, feed_id):
        _, data = self.expect(202, "POST", "/api/threat-feeds/%s/consume/" % feed_id)
        return data["task_id"]

    def task(self, task_id):
        _, data = self.expect(200, "GET", "/api/threat-feeds/task-status/%s/" % task_id)
        return data

    def wait(self, task_id, statuses=TERMINAL, timeout=90):
        return self.stack.wait_task(task_id, statuses=statuses, timeout=timeout, headers=self.auth)

    def stop_run(self, task_id):
        """Leave no run behind for the next test."""
        self.req("POST", "/api/threat-feeds/cancel-task/%s/" % task_id, {"mode": "stop_now"})
        self.wait(task_id)

    def fast_upstream(self):
        self.stack.upstream_ctl("faults", {"page_delay_ms": 0})
        self.addCleanup(self.stack.upstream_ctl, "reset", {})


class Basics(ApiCase):
    """Everything that needs no run to finish."""

    def test_health(self):
        h, data = self.expect(200, "GET", "/api/health")
        self.assertEqual(data["status"], "ok")
        self.assertEqual(data["store"], "ok")
        self.assertEqual(data["auth"], "none")
        self.assertIsInstance(data["active_workers"], int)
        self.assertIsInstance(data["queued"], int)
        with open(os.path.join(REPO, "VERSION")) as f:
            self.assertEqual(data["version"], f.read().strip())
        self.assertEqual(h.get("Content-Type"), "application/json; charset=utf-8")
        self.assertEqual(h.get("Cache-Control"), "no-store")
        self.assertEqual(h.get("X-Content-Type-Options"), "nosniff")
        status, h, body = self.req("HEAD", "/api/health")
        self.assertEqual(status, 200)
        self.assertFalse(body)

    def test_unknown_routes_and_bad_ids_are_404(self):
        for path in ("/api/nope", "/api/", "/api/health/more", "/api/threat-feeds/x/unknown/",
                     "/api/threat-feeds/Bad_Upper/", "/api/threat-feeds/-x/consume/",
                     "/api/threat-feeds/%s/" % ("a" * 65),
                     "/api/threat-feeds/task-status/not-a-uuid/",
                     "/api/threat-feeds/task-status/%s/" % UUID_ZERO.upper(),
                     "/api/threat-feeds/cancel-task/123/",
                     "/api/threat-feeds/task-status/"):
            with self.subTest(path=path):
                self.expect(404, "GET", path, code="not_found")
        # valid ids that do not exist
        self.expect(404, "GET", "/api/threat-feeds/no-such-feed/", code="not_found")
        self.expect(404, "GET", "/api/threat-feeds/task-status/%s/" % UUID_ZERO, code="not_found")
        self.expect(404, "POST", "/api/threat-feeds/cancel-task/%s/" % UUID_ZERO, {}, code="not_found")
        self.expect(404, "POST", "/api/threat-feeds/no-such-feed/consume/", code="not_found")
        self.expect(404, "GET", "/api/threat-feeds/no-such-feed/indicators/", code="not_found")
        self.expect(404, "POST", "/api/threat-feeds/no-such-feed/test_connection/", code="not_found")
        self.expect(404, "POST", "/api/threat-feeds/no-such-feed/cancel_consumption/", {},
                    code="not_found")

    def test_wrong_method_is_405_with_allow(self):
        cases = [("POST", "/api/health", "GET, HEAD"),
                 ("PUT", "/api/threat-feeds/", "GET, HEAD, POST"),
                 ("POST", "/api/threat-feeds/some-feed/", "GET, HEAD, PATCH, DELETE"),
                 ("GET", "/api/threat-feeds/some-feed/consume/", "POST"),
                 ("DELETE", "/api/threat-feeds/task-status/%s/" % UUID_ZERO, "GET, HEAD"),
                 ("GET", "/api/threat-feeds/cancel-task/%s/" % UUID_ZERO, "POST"),
                 ("POST", "/api/threat-feeds/tasks/", "GET, HEAD, DELETE")]
        for method, path, allow in cases:
            with self.subTest(method=method, path=path):
                h, _ = self.expect(405, method, path, {} if method != "GET" else None,
                                   code="method_not_allowed")
                self.assertEqual(h.get("Allow"), allow)

    def test_trailing_slash_optional(self):
        self.expect(200, "GET", "/api/threat-feeds")
        self.expect(200, "GET", "/api/threat-feeds/tasks")
        self.expect(200, "GET", "/api/health/")

    def test_bad_json_and_fields_are_400(self):
        for body in ('{"id":', "not json", '{"a":1} trailing', "[1,2]", '"text"',
                     "[" * 40 + "]" * 40):
            with self.subTest(body=body[:20]):
                self.expect(400, "POST", "/api/threat-feeds/", body, JSON, code="invalid_json")
        for body in ({"id": "bad-types", "name": 5, "type": "taxii21", "url": "http://x/"},
                     {"id": "bad-type", "name": "x", "type": "gopher", "url": "http://x/"},
                     {"id": "bad-url", "name": "x", "type": "taxii21", "url": "file:///etc/passwd"},
                     {"id": "BAD ID", "name": "x", "type": "taxii21", "url": "http://x/"},
                     {"id": "tasks", "name": "x", "type": "taxii21", "url": "http://x/"},
                     {"id": "bad-interval", "name": "x", "type": "taxii21", "url": "http://x/",
                      "interval_s": "soon"}):
            with self.subTest(body=body):
                _, data = self.expect(400, "POST", "/api/threat-feeds/", body)
                self.assertIn(data["code"], ("invalid_field", "bad_request"))

    def test_oversize_body_is_413(self):
        big = '{"name":"%s"}' % ("x" * (64 * 1024))
        self.expect(413, "POST", "/api/threat-feeds/", big, JSON)
        # exactly 64 KiB is read and judged on its content, not its size
        exact = '{"name":"%s"}' % ("x" * (64 * 1024 - 11))
        self.assertEqual(len(exact), 64 * 1024)
        status, _, _ = self.req("POST", "/api/threat-feeds/", exact, JSON)
        self.assertEqual(status, 400)

    def test_wrong_content_type_is_415(self):
        for ct in ("text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin1",
                   "multipart/form-data; boundary=x"):
            with self.subTest(ct=ct):
                self.expect(415, "POST", "/api/threat-feeds/", '{"id":"x"}', {"Content-Type": ct},
                            code="unsupported_media_type")
        # charset=utf-8 is fine
        self.new_feed("ct-ok")
        self.expect(200, "PATCH", "/api/threat-feeds/ct-ok/", '{"name":"utf8 ✓"}',
                    {"Content-Type": "application/json; charset=utf-8"})
        self.expect(204, "DELETE", "/api/threat-feeds/ct-ok/")

    def test_bad_query_is_400(self):
        for q in ("limit=0", "limit=1001", "limit=ten", "active=maybe", "feed_id=NOT_VALID",
                  "limit=1&limit=2", "limit=%zz"):
            with self.subTest(q=q):
                _, data = self.expect(400, "GET", "/api/threat-feeds/tasks/?" + q)
                self.assertIn(data["code"], ("invalid_parameter", "invalid_query"))
        self.expect(400, "DELETE", "/api/threat-feeds/tasks/?finished_before=yesterday",
                    code="invalid_parameter")
        self.expect(200, "GET", "/api/threat-feeds/tasks/?active=&feed_id=&limit=")

    def test_bad_paths_are_400(self):
        # (an encoded NUL never reaches the handler: lighttpd refuses it
        # itself, with an HTML page; the unit tests cover the handler's 400)
        for path in ("/api/threat-feeds/%zz/", "/api/threat-feeds/a%2"):
            with self.subTest(path=path):
                # lighttpd may refuse it first, in the API's shape too
                _, data = self.expect(400, "GET", path)
                self.assertIn(data["code"], ("invalid_path", "bad_request"))

    def test_feed_crud(self):
        h, feed = self.expect(201, "POST", "/api/threat-feeds/",
                              self.stack.demo_feed("crud", username="u", secret="hunter2-s3cret"))
        self.assertEqual(h.get("Location"), "/api/threat-feeds/crud/")
        self.assertEqual(feed["id"], "crud")
        self.assertTrue(feed["has_secret"])
        self.assertNotIn("secret", feed)
        self.assertNotIn("hunter2", json.dumps(feed))
        self.expect(409, "POST", "/api/threat-feeds/", self.stack.demo_feed("crud"), code="exists")

        h, read = self.expect(200, "GET", "/api/threat-feeds/crud/")
        self.assertTrue(h.get("ETag"))
        self.assertNotIn("hunter2", json.dumps(read))
        _, listed = self.expect(200, "GET", "/api/threat-feeds/")
        self.assertIn("crud", [f["id"] for f in listed["feeds"]])
        self.assertNotIn("hunter2", json.dumps(listed))

        _, changed = self.expect(200, "PATCH", "/api/threat-feeds/crud/", {"name": "Renamed"})
        self.assertEqual(changed["name"], "Renamed")
        self.expect(400, "PATCH", "/api/threat-feeds/crud/", {"enabled": "yes"})
        self.expect(404, "PATCH", "/api/threat-feeds/nope-feed/", {"name": "x"})

        status, h, body = self.req("DELETE", "/api/threat-feeds/crud/")
        self.assertEqual(status, 204)
        self.assertFalse(body)
        self.expect(404, "GET", "/api/threat-feeds/crud/")
        self.expect(404, "DELETE", "/api/threat-feeds/crud/")

    def test_generated_id(self):
        feed = dict(self.stack.demo_feed("x"), name="Generated Id Feed")
        del feed["id"]
        h, made = self.expect(201, "POST", "/api/threat-feeds/", feed)
        self.assertTrue(made["id"])
        self.assertEqual(h.get("Location"), "/api/threat-feeds/%s/" % made["id"])
        self.expect(204, "DELETE", h.get("Location"))

    def test_csrf(self):
        foreign = {"Origin": "http://evil.example"}
        self.expect(403, "POST", "/api/threat-feeds/", self.stack.demo_feed("csrf"), foreign,
                    code="csrf")
        self.expect(403, "POST", "/api/threat-feeds/", self.stack.demo_feed("csrf"),
                    {"Sec-Fetch-Site": "cross-site"}, code="csrf")
        self.expect(403, "POST", "/api/threat-feeds/", self.stack.demo_feed("csrf"),
                    {"Origin": "null"}, code="csrf")
        same = {"Origin": "http://127.0.0.1:%d" % self.stack.port, "Sec-Fetch-Site": "same-origin"}
        self.expect(201, "POST", "/api/threat-feeds/", self.stack.demo_feed("csrf"), same)
        self.expect(200, "GET", "/api/threat-feeds/csrf/", headers=foreign)   # reads are fine
        self.expect(403, "PATCH", "/api/threat-feeds/csrf/", {"name": "x"}, foreign, code="csrf")
        self.expect(403, "DELETE", "/api/threat-feeds/csrf/", headers=foreign, code="csrf")
        self.expect(204, "DELETE", "/api/threat-feeds/csrf/", headers=same)

    def test_test_connection(self):
        self.new_feed("tc")
        status, _, data = self.req("POST", "/api/threat-feeds/tc/test_connection/", {})
        if status == 501:   # the CLI has no test-connection command (yet)
            self.assertEqual(data["code"], "not_implemented")
        else:
            self.assertEqual(status, 200, data)
            self.assertIsInstance(data["ok"], bool)
            self.assertIsInstance(data["detail"], str)
            self.assertTrue(data["ok"], data)
        self.expect(204, "DELETE", "/api/threat-feeds/tc/")


class Runs(ApiCase):
    """Consume, conflicts, cancels, ETags, history: these start runs."""

    def test_consume_conflict_and_stop_round_trip(self):
        self.new_feed("rt")
        h, started = self.expect(202, "POST", "/api/threat-feeds/rt/consume/")
        task_id = started["task_id"]
        self.assertEqual(started["feed_id"], "rt")
        self.assertEqual(started["status"], "queued")
        self.assertEqual(started["status_url"], "/api/threat-feeds/task-status/%s/" % task_id)
        self.assertEqual(h.get("Location"), started["status_url"])
        self.expect(200, "GET", started["status_url"])

        # one active run per feed; the feed cannot change under it
        _, conflict = self.expect(409, "POST", "/api/threat-feeds/rt/consume/", {}, code="run_active")
        self.assertEqual(conflict["task_id"], task_id)
        self.expect(409, "DELETE", "/api/threat-feeds/rt/", code="run_active")
        self.expect(409, "PATCH", "/api/threat-feeds/rt/", {"name": "x"}, code="run_active")
        _, feed = self.expect(200, "GET", "/api/threat-feeds/rt/")
        self.assertEqual(feed["active_task_id"], task_id)

        self.wait(task_id, {"running"} | TERMINAL, timeout=60)
        self.expect(400, "POST", "/api/threat-feeds/cancel-task/%s/" % task_id, {"mode": "later"},
                    code="bad_mode")
        self.expect(400, "POST", "/api/threat-feeds/cancel-task/%s/" % task_id, {"mode": 1},
                    code="bad_mode")
        _, cancelled = self.expect(202, "POST", "/api/threat-feeds/cancel-task/%s/" % task_id,
                                   {"mode": "stop_now"})
        self.assertEqual(cancelled["task_id"], task_id)
        self.assertIn(cancelled["status"], {"stopping", "stopped"})
        self.assertEqual(cancelled["cancel"]["mode"], "stop_now")
        self.assertEqual(cancelled["cancel"]["requested_by"], "anonymous")
        # repeating is harmless while it stops
        status, _, again = self.req("POST", "/api/threat-feeds/cancel-task/%s/" % task_id, {})
        self.assertIn(status, (202, 409), again)

        done = self.wait(task_id)
        self.assertEqual(done["status"], "stopped", done)
        self.expect(409, "POST", "/api/threat-feeds/cancel-task/%s/" % task_id, {},
                    code="task_finished")
        self.expect(409, "POST", "/api/threat-feeds/rt/cancel_consumption/", {},
                    code="no_active_run")
        _, feed = self.expect(200, "GET", "/api/threat-feeds/rt/")
        self.assertIsNone(feed["active_task_id"])
        self.assertEqual(feed["last_task_id"], task_id)

    def test_cancel_consumption_cancel_job(self):
        self.new_feed("cj")
        task_id = self.consume("cj")
        self.expect(400, "POST", "/api/threat-feeds/cj/cancel_consumption/", {"mode": "STOP_NOW"},
                    code="bad_mode")
        _, t = self.expect(202, "POST", "/api/threat-feeds/cj/cancel_consumption/",
                           {"mode": "cancel_job"})
        self.assertEqual(t["task_id"], task_id)
        self.assertIn(t["status"], {"cancelling", "cancelled"})
        done = self.wait(task_id)
        self.assertEqual(done["status"], "cancelled", done)
        _, feed = self.expect(200, "GET", "/api/threat-feeds/cj/")
        self.assertEqual(feed["indicator_count"], 0)   # rolled back (docs/SPEC.md §3)
        _, page = self.expect(200, "GET", "/api/threat-feeds/cj/indicators/")
        self.assertEqual(page["indicators"], [])
        # a new run may start at once
        task2 = self.consume("cj")
        self.assertNotEqual(task2, task_id)
        self.stop_run(task2)

    def test_etag_and_304(self):
        self.new_feed("et")
        task_id = self.consume("et")
        try:
            path = "/api/threat-feeds/task-status/%s/" % task_id
            for url in (path, "/api/threat-feeds/tasks/?feed_id=et"):
                with self.subTest(url=url):
                    # the body can change between two reads while the run
                    # progresses: retry until two reads agree
                    for _ in range(50):
                        h, body = self.expect(200, "GET", url)
                        tag = h.get("ETag")
                        self.assertRegex(tag, r'^"[0-9a-f]{16}"$')
                        status, h2, body2 = self.req("GET", url, headers={"If-None-Match": tag})
                        if status == 304:
                            break
                        self.assertEqual(status, 200)
                        self.assertNotEqual(h2.get("ETag"), tag)
                    self.assertEqual(status, 304)
                    self.assertFalse(body2)
                    self.assertEqual(h2.get("ETag"), tag)
                    status, _, _ = self.req("GET", url, headers={"If-None-Match": '"0000000000000000"'})
                    self.assertEqual(status, 200)
        finally:
            self.stop_run(task_id)
        # the stopped task no longer changes: its ETag is stable
        h1, _ = self.expect(200, "GET", path)
        h2, _ = self.expect(200, "GET", path)
        self.assertEqual(h1.get("ETag"), h2.get("ETag"))
        status, _, _ = self.req("GET", path, headers={"If-None-Match": "W/" + h1.get("ETag")})
        self.assertEqual(status, 304)

    def test_task_list_filters_and_history(self):
        self.new_feed("hl")
        first = self.consume("hl")
        self.stop_run(first)
        second = self.consume("hl")
        try:
            _, data = self.expect(200, "GET", "/api/threat-feeds/tasks/?feed_id=hl")
            ids = [t["task_id"] for t in data["tasks"]]
            self.assertEqual(ids[:2], [second, first])          # newest first
            _, data = self.expect(200, "GET", "/api/threat-feeds/tasks/?feed_id=hl&active=1")
            self.assertEqual([t["task_id"] for t in data["tasks"]], [second])
            _, data = self.expect(200, "GET", "/api/threat-feeds/tasks/?limit=1")
            self.assertEqual(len(data["tasks"]), 1)

            # clearing history: never the active run
            _, data = self.expect(200, "DELETE",
                                  "/api/threat-feeds/tasks/?finished_before=2000-01-01T00:00:00Z")
            self.assertEqual(data, {"deleted": 0})
            _, data = self.expect(200, "DELETE", "/api/threat-feeds/tasks/")
            self.assertGreaterEqual(data["deleted"], 1)
            self.expect(404, "GET", "/api/threat-feeds/task-status/%s/" % first)
            self.assertIn(self.task(second)["status"], ACTIVE | TERMINAL)
        finally:
            self.stop_run(second)

    def test_indicators_after_a_complete_run(self):
        self.fast_upstream()
        self.new_feed("ind")
        task_id = self.consume("ind")
        done = self.wait(task_id)
        self.assertEqual(done["status"], "completed", done)
        _, feed = self.expect(200, "GET", "/api/threat-feeds/ind/")
        total = feed["indicator_count"]
        self.assertGreater(total, 0)
        seen, cursor, pages = [], None, 0
        while True:
            q = "?limit=1000" + ("&cursor=" + cursor if cursor else "")
            _, page = self.expect(200, "GET", "/api/threat-feeds/ind/indicators/" + q)
            seen.extend(page["indicators"])
            cursor = page["next_cursor"]
            pages += 1
            if not cursor:
                break
            self.assertLess(pages, 100)
        self.assertEqual(len(seen), total)
        self.expect(400, "GET", "/api/threat-feeds/ind/indicators/?cursor=zz",
                    code="invalid_parameter")
        self.expect(400, "GET", "/api/threat-feeds/ind/indicators/?limit=0")


class TokenStack(Stack):
    """stack.py waits for GET /api/health without a token, which is 401 with
    api_token set (docs/SPEC.md §2: every /api/ request): send it while starting."""
    starting = False

    def request(self, method, path, body=None, headers=None, timeout=30):
        if self.starting and headers is None:
            headers = {"Authorization": "Bearer " + self.conf["api_token"]}
        return super().request(method, path, body=body, headers=headers, timeout=timeout)

    def start(self):
        self.starting = True
        try:
            return super().start()
        finally:
            self.starting = False


class Auth(ApiCase):
    conf = {"api_token": "t0ken-for-tests", "trust_remote_user": 1}
    auth = {"Authorization": "Bearer t0ken-for-tests"}
    stack_class = TokenStack

    def refused(self, headers, path="/api/health", method="GET", body=None):
        status, h, data = self.req(method, path, body=body, headers=headers, auth=False)
        self.assertEqual(status, 401, data)
        self.assertEqual(data["code"], "unauthorized")
        self.assertTrue(h.get("WWW-Authenticate", "").startswith("Bearer"))
        self.assertNotIn("t0ken", json.dumps(data))

    def test_refusals(self):
        self.refused({})
        self.refused({"Authorization": "Bearer wrong"})
        self.refused({"Authorization": "Bearer t0ken-for-test"})       # a prefix
        self.refused({"Authorization": "Bearer t0ken-for-tests2"})     # longer
        self.refused({"Authorization": "Basic dDBrZW4tZm9yLXRlc3Rz"})
        self.refused({"Authorization": "t0ken-for-tests"})
        # a client cannot claim to be web-server authenticated
        self.refused({"Remote-User": "admin", "X-Remote-User": "admin"})
        # routes are not revealed before authentication
        self.refused({}, path="/api/no-such-route/")
        self.refused({}, path="/api/threat-feeds/", method="POST", body={"id": "x"})
        self.refused({}, path="/api/threat-feeds/?api_token=t0ken-for-tests")

    def test_bearer_passes(self):
        _, data = self.expect(200, "GET", "/api/health")
        self.assertEqual(data["auth"], "token")
        self.expect(200, "GET", "/api/threat-feeds/", headers={"Authorization": "bearer t0ken-for-tests"})
        self.new_feed("authed")
        task_id = self.consume("authed")
        _, t = self.expect(202, "POST", "/api/threat-feeds/authed/cancel_consumption/", {})
        self.assertEqual(t["cancel"]["requested_by"], "api-token")
        self.wait(task_id)


class Pollers(ApiCase):
    """50 dashboards polling one task while its run writes progress."""
    fcgi_procs = 4

    def test_50_concurrent_pollers(self):
        self.new_feed("poll")
        task_id = self.consume("poll")
        path = "/api/threat-feeds/task-status/%s/" % task_id
        results, errors, lock = [], [], threading.Lock()
        done = threading.Event()

        def poller():
            tag = None
            try:
                while not done.is_set():
                    hdrs = {"If-None-Match": tag} if tag else {}
                    status, h, data = self.stack.request("GET", path, headers=hdrs)
                    with lock:
                        results.append(status)
                    if status == 200:
                        if not isinstance(data, dict) or data.get("task_id") != task_id:
                            raise AssertionError("bad body: %r" % (data,))
                        tag = h.get("ETag")
                        if data["status"] in TERMINAL:
                            return
                    elif status != 304:
                        raise AssertionError("status %d: %r" % (status, data))
                    time.sleep(0.02)
            except Exception as e:      # noqa: BLE001 — reported below
                with lock:
                    errors.append(repr(e))

        threads = [threading.Thread(target=poller, daemon=True) for _ in range(50)]
        for t in threads:
            t.start()
        try:
            # let them poll through real progress, then stop the run
            self.wait(task_id, {"running"} | TERMINAL, timeout=60)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if self.task(task_id)["progress"]["pages_done"] >= 5 or len(results) > 2000:
                    break
                time.sleep(0.1)
            self.req("POST", "/api/threat-feeds/cancel-task/%s/" % task_id, {})
            self.wait(task_id)
            for t in threads:
                t.join(timeout=60)
        finally:
            done.set()
        self.assertEqual(errors, [])
        self.assertFalse(any(t.is_alive() for t in threads))
        self.assertGreater(len(results), 100)
        self.assertTrue(set(results) <= {200, 304}, set(results))
        self.assertIn(304, results)


def handler_pids(stack):
    """PIDs of this stack's FastCGI handler processes."""
    exe = os.path.realpath(stack.fcgi)
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.path.realpath("/proc/%s/exe" % name) != exe:
                continue
            with open("/proc/%s/environ" % name, "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if ("THREATFEED_DB=%s" % stack.db_dir).encode() in env:
            pids.append(int(name))
    return pids


class HandlerKilled(ApiCase):
    """A handler process SIGKILLed while it holds a request."""
    upstream_args = ["--objects", "100"]

    def test_sigkill_during_request(self):
        self.new_feed("k")
        pids = handler_pids(self.stack)
        self.assertTrue(pids, "no handler processes found")
        # Freeze every handler so the next request is certainly inside one
        # (accepted on its socket), then kill them all.
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        got = {}

        def victim():
            try:
                got["answer"] = self.stack.request("GET", "/api/threat-feeds/k/", timeout=30)
            except Exception as e:      # noqa: BLE001
                got["answer"] = e

        t = threading.Thread(target=victim, daemon=True)
        t.start()
        time.sleep(0.5)
        self.assertTrue(t.is_alive(), "the request did not wait for the frozen handler")
        for pid in pids:
            os.kill(pid, signal.SIGKILL)     # also ends a stopped process
        t.join(timeout=30)
        answer = got.get("answer")
        if isinstance(answer, tuple):
            # the web server's own error, in the API's shape — or, if it
            # retried on a fresh handler, the real answer
            self.assertIn(answer[0], (200, 500, 502, 503, 504), answer)

        # The web server restarts the handlers; the store is unharmed.
        deadline = time.monotonic() + 20
        while True:
            status, _, _ = self.req("GET", "/api/health")
            if status == 200:
                break
            self.assertLess(time.monotonic(), deadline, "handlers did not come back")
            time.sleep(0.2)
        for _ in range(20):
            self.expect(200, "GET", "/api/threat-feeds/k/")
        self.new_feed("k2")
        self.expect(204, "DELETE", "/api/threat-feeds/k2/")
        self.assertTrue(set(handler_pids(self.stack)).isdisjoint(pids))


class PlainCgi(unittest.TestCase):
    """The binary outside any web server: with fd 0 not a FastCGI socket it
    answers one request as a CGI program (like cgit's tests), which is also
    how the handler can be debugged by hand."""

    def setUp(self):
        root = os.path.join(REPO, "build", "test-tmp")
        os.makedirs(root, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="cgi-", dir=root)
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.fcgi = os.path.join(REPO, bin_dir(), "threatfeed.fcgi")

    def cgi(self, method, uri, body=None, **env):
        e = {k: v for k, v in os.environ.items() if not k.startswith("THREATFEED_")}
        e.update(THREATFEED_DB=os.path.join(self.dir, "db"), THREATFEED_STATE_DIR=self.dir,
                 THREATFEED_WORKER="/bin/false", REQUEST_METHOD=method, REQUEST_URI=uri,
                 HTTP_HOST="localhost")
        data = (body or "").encode()
        if body is not None:
            e.update(CONTENT_LENGTH=str(len(data)), CONTENT_TYPE="application/json")
        e.update(env)
        out = subprocess.run([self.fcgi], input=data, env=e, capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        head, _, payload = out.stdout.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        self.assertTrue(lines[0].startswith("Status: "), lines)
        headers = dict(l.split(": ", 1) for l in lines)
        return int(headers["Status"].split()[0]), headers, json.loads(payload) if payload else None

    def test_cgi_requests(self):
        status, h, data = self.cgi("GET", "/api/health")
        self.assertEqual(status, 200, data)
        self.assertEqual(h["Content-Type"], "application/json; charset=utf-8")
        status, h, data = self.cgi("POST", "/mnt/api/threat-feeds/", json.dumps(
            {"id": "cgi", "name": "CGI", "type": "stix_bundle", "url": "http://127.0.0.1:9/b.json"}))
        self.assertEqual(status, 201, data)
        self.assertEqual(h["Location"], "/mnt/api/threat-feeds/cgi/")
        status, _, data = self.cgi("GET", "/api/threat-feeds/cgi/")
        self.assertEqual((status, data["id"]), (200, "cgi"))
        # the worker is /bin/false: the run cannot start, the task says why
        status, _, data = self.cgi("POST", "/api/threat-feeds/cgi/consume/")
        self.assertIn(status, (202, 500), data)
        status, _, data = self.cgi("GET", "/api/threat-feeds/x", QUERY_STRING="")
        self.assertEqual((status, data["code"]), (404, "not_found"))
        status, _, data = self.cgi("POST", "/api/threat-feeds/", "{", )
        self.assertEqual((status, data["code"]), (400, "invalid_json"))
        status, h, _ = self.cgi("DELETE", "/api/health")
        self.assertEqual((status, h["Allow"]), (405, "GET, HEAD"))
        status, _, data = self.cgi("GET", "/api/health", THREATFEED_DB="/dev/null/db")
        self.assertEqual((status, data["code"]), (503, "store_unavailable"))

    def test_options(self):
        out = subprocess.run([self.fcgi, "--version"], capture_output=True, text=True, timeout=10)
        self.assertEqual(out.returncode, 0)
        self.assertRegex(out.stdout, r"^threatfeed.fcgi \d+\.\d+\.\d+")
        out = subprocess.run([self.fcgi, "--help"], capture_output=True, text=True, timeout=10)
        self.assertEqual(out.returncode, 0)
        self.assertIn("usage:", out.stdout)
        out = subprocess.run([self.fcgi, "--bogus"], capture_output=True, text=True, timeout=10)
        self.assertEqual(out.returncode, 2)


if __name__ == "__main__":
    unittest.main()
