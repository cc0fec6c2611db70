"""Run-end webhooks (README "Webhooks", issue 15 §3) through the real stack:
lighttpd, the FastCGI handler, supervisors, workers and the webhook sender
(`threatfeed-worker notify`), with receivers this test starts on 127.0.0.1.

Checked: the body is the final task JSON as GET task-status answers it; the
X-Threatfeed-Signature header is HMAC-SHA256 of the body with the shared
secret (verified here with Python's hmac); 500s are retried with backoff
until a 2xx; a 4xx other than 429 is final; a receiver that hangs delays
neither a cancel, nor the next run's start, nor any terminal state, and is
given up after the bounded attempts; a feed's own options.webhook_url and
webhook_secret override the global ones, and the secret is never returned;
a run cancelled while queued (ended by the handler's reaper) is reported too.

Waits are bounded generously; nothing asserts speed except lower bounds that
only a too-early retry could break."""
import hashlib
import hmac
import http.client
import http.server
import json
import os
import signal
import threading
import time
import unittest

from stack import TERMINAL
from test_api import ApiCase
from runenv import run_processes

GLOBAL_SECRET = "global-hook-s3cret-PLUGH"
FEED_SECRET = "feed-hook-s3cret-XYZZY"


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers from
    a plan: plan(feed_id, n) -> a status code for the n-th request of a
    delivery, or "hang" to hold the request open (until close(), or until
    the client gives up)."""

    def __init__(self, plan=None):
        self.plan = plan or (lambda feed_id, n: 200)
        self.got = []            # one dict per request, in arrival order
        self.open = 0            # requests being held ("hang")
        self.lock = threading.Condition()
        self.released = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                delivery = self.headers.get("X-Threatfeed-Delivery")
                with receiver.lock:
                    count = sum(1 for g in receiver.got if g["delivery"] == delivery) + 1
                    receiver.got.append({"delivery": delivery, "headers": dict(self.headers),
                                         "body": body, "path": self.path,
                                         "t": time.monotonic(), "n": count})
                    receiver.lock.notify_all()
                try:
                    feed_id = json.loads(body).get("feed_id")
                except ValueError:
                    feed_id = None
                action = receiver.plan(feed_id, count)
                if action == "hang":
                    with receiver.lock:
                        receiver.open += 1
                    receiver.released.wait(120)
                    with receiver.lock:
                        receiver.open -= 1
                        receiver.lock.notify_all()
                    action = 200
                try:
                    self.send_response(action)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the sender gave up on us first

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    def deliveries(self, delivery):
        with self.lock:
            return [g for g in self.got if g["delivery"] == delivery]

    def wait_for(self, delivery, n, timeout=60):
        """The first n requests for delivery, waiting up to timeout s."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                got = [g for g in self.got if g["delivery"] == delivery]
                if len(got) >= n:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("receiver got %d of %d requests for %s"
                                         % (len(got), n, delivery))
                self.lock.wait(left)


def senders(task_id):
    """Pids of live `threatfeed-worker notify TASK` processes."""
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
        if len(argv) >= 3 and argv[1] == b"notify" and argv[2].decode(errors="replace") == task_id:
            found.append(int(pid))
    return found


def wait_no_sender(task_id, timeout):
    deadline = time.monotonic() + timeout
    while senders(task_id):
        if time.monotonic() > deadline:
            raise AssertionError("the webhook sender of %s still runs after %ss" % (task_id, timeout))
        time.sleep(0.1)


class HookCase(ApiCase):
    """One stack per class, with receivers started before it (their URL goes
    into the config file the stack writes)."""
    plan = None
    hook_conf = {}

    @classmethod
    def setUpClass(cls):
        cls.receiver = Receiver(cls.plan)
        cls.conf = dict(cls.hook_conf, webhook_url=cls.receiver.url, webhook_secret=GLOBAL_SECRET)
        try:
            super().setUpClass()
        except BaseException:
            cls.receiver.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.receiver.close()
        super().tearDownClass()

    def raw_task(self, task_id):
        """GET task-status, parsed."""
        status, _, data = self.req("GET", "/api/threat-feeds/task-status/%s/" % task_id)
        self.assertEqual(status, 200, data)
        return data

    def task_bytes(self, task_id):
        """GET task-status as the bytes the handler sent."""
        conn = http.client.HTTPConnection("127.0.0.1", self.stack.port, timeout=30)
        try:
            conn.request("GET", "/api/threat-feeds/task-status/%s/" % task_id, headers=self.auth)
            r = conn.getresponse()
            self.assertEqual(r.status, 200)
            return r.read()
        finally:
            conn.close()

    def check_signed(self, got, secret):
        sig = got["headers"].get("X-Threatfeed-Signature", "")
        want = "sha256=" + hmac.new(secret.encode(), got["body"], hashlib.sha256).hexdigest()
        self.assertTrue(hmac.compare_digest(sig, want), (sig, want))

    def completed_run(self, feed_id):
        self.fast_upstream()
        task_id = self.consume(feed_id)
        task = self.wait(task_id)
        self.assertEqual(task["status"], "completed", task)
        return task_id, task


class Delivery(HookCase):
    # one run at a time: the queued-cancel test needs a run to wait behind
    hook_conf = {"max_concurrent_runs": 1, "webhook_attempts": 3, "webhook_timeout_s": 5}

    def test_body_is_the_final_task_and_signed(self):
        self.new_feed("hook-body")
        task_id, task = self.completed_run("hook-body")
        [got] = self.receiver.wait_for(task_id, 1)
        self.assertEqual(got["body"], self.task_bytes(task_id))
        self.assertEqual(json.loads(got["body"]), task)
        self.check_signed(got, GLOBAL_SECRET)
        h = got["headers"]
        self.assertEqual(got["path"], "/hook")
        self.assertEqual(h.get("Content-Type"), "application/json")
        self.assertEqual(h.get("X-Threatfeed-Event"), "run.finished")
        self.assertEqual(h.get("X-Threatfeed-Attempt"), "1")
        self.assertLess(abs(int(h.get("X-Threatfeed-Timestamp")) - time.time()), 300)
        # exactly one delivery: its sender is done and sent no other
        wait_no_sender(task_id, 30)
        self.assertEqual(len(self.receiver.deliveries(task_id)), 1)

    def test_a_signature_with_another_secret_does_not_verify(self):
        self.new_feed("hook-neg")
        task_id, _ = self.completed_run("hook-neg")
        [got] = self.receiver.wait_for(task_id, 1)
        with self.assertRaises(AssertionError):
            self.check_signed(got, "not-" + GLOBAL_SECRET)
        tampered = dict(got, body=got["body"].replace(b"completed", b"cancelled", 1))
        self.assertNotEqual(tampered["body"], got["body"])
        with self.assertRaises(AssertionError):
            self.check_signed(tampered, GLOBAL_SECRET)

    def test_cancelled_while_queued_is_reported(self):
        """Ended by the handler's reaper (no supervisor ever claimed it)."""
        self.new_feed("hook-long")
        self.new_feed("hook-queued")
        running = self.consume("hook-long")          # slow upstream: takes the one slot
        self.addCleanup(self.stop_run, running)
        queued = self.consume("hook-queued")
        self.assertEqual(self.task(queued)["status"], "queued")
        self.expect(202, "POST", "/api/threat-feeds/cancel-task/%s/" % queued, {"mode": "cancel_job"})
        final = self.wait(queued)
        self.assertEqual(final["status"], "cancelled", final)
        [got] = self.receiver.wait_for(queued, 1)
        body = json.loads(got["body"])
        self.assertEqual(body["status"], "cancelled")
        self.assertEqual(body, self.raw_task(queued))
        self.check_signed(got, GLOBAL_SECRET)

    def test_worker_lost_is_reported(self):
        """Supervisor and worker SIGKILLed: the next task-status request reaps
        the run ("worker lost") and starts its sender detached."""
        self.new_feed("hook-lost")
        task_id = self.consume("hook-lost")
        self.wait(task_id, statuses={"running"} | TERMINAL)
        procs = {}
        deadline = time.monotonic() + 30
        while len(procs) < 2:
            self.assertLess(time.monotonic(), deadline, procs)
            procs = run_processes(task_id)
            time.sleep(0.05)
        # The supervisor, stopped first, cannot settle the run when the
        # worker dies before it does.
        sup = procs["supervise"]
        os.kill(sup, signal.SIGSTOP)
        os.kill(procs["work"], signal.SIGKILL)
        os.kill(sup, signal.SIGKILL)
        final = self.wait(task_id)
        self.assertEqual((final["status"], final["error"]), ("failed", "worker lost"), final)
        [got] = self.receiver.wait_for(task_id, 1)
        self.assertEqual(json.loads(got["body"]), self.raw_task(task_id))
        self.check_signed(got, GLOBAL_SECRET)
        wait_no_sender(task_id, 30)
        self.assertEqual(len(self.receiver.deliveries(task_id)), 1)


class Retries(HookCase):
    hook_conf = {"webhook_attempts": 5, "webhook_timeout_s": 5}

    # per feed: what its n-th request is answered
    scripts = {
        "hook-500": lambda n: 500 if n <= 2 else 200,
        "hook-404": lambda n: 404,
        "hook-429": lambda n: 429 if n == 1 else 200,
        "hook-down": lambda n: 503,
    }
    plan = staticmethod(lambda feed_id, n: Retries.scripts[feed_id](n))

    def test_500s_are_retried_until_delivered(self):
        self.new_feed("hook-500")
        task_id, task = self.completed_run("hook-500")
        got = self.receiver.wait_for(task_id, 3)
        wait_no_sender(task_id, 60)
        got = self.receiver.deliveries(task_id)
        self.assertEqual(len(got), 3, [g["n"] for g in got])
        self.assertEqual([g["headers"]["X-Threatfeed-Attempt"] for g in got], ["1", "2", "3"])
        for g in got:
            self.assertEqual(g["body"], got[0]["body"])
            self.check_signed(g, GLOBAL_SECRET)
        self.assertEqual(json.loads(got[0]["body"]), self.raw_task(task_id))
        # backoff: 1 s after the first failure, 2 s after the second (lower
        # bounds only: a slow machine makes the gaps longer, never shorter)
        self.assertGreaterEqual(got[1]["t"] - got[0]["t"], 0.9)
        self.assertGreaterEqual(got[2]["t"] - got[1]["t"], 1.9)

    def test_4xx_is_final_and_429_is_not(self):
        self.new_feed("hook-404")
        self.new_feed("hook-429")
        self.fast_upstream()
        first = self.consume("hook-404")
        self.wait(first)
        self.receiver.wait_for(first, 1)
        wait_no_sender(first, 60)
        self.assertEqual(len(self.receiver.deliveries(first)), 1)
        second = self.consume("hook-429")
        self.wait(second)
        self.receiver.wait_for(second, 2)
        wait_no_sender(second, 60)
        self.assertEqual(len(self.receiver.deliveries(second)), 2)

    def test_gives_up_after_the_bounded_attempts(self):
        self.new_feed("hook-down")
        self.fast_upstream()
        task_id = self.consume("hook-down")
        self.wait(task_id)
        self.receiver.wait_for(task_id, 5)
        wait_no_sender(task_id, 120)
        self.assertEqual(len(self.receiver.deliveries(task_id)), 5)


class HangingReceiver(HookCase):
    """Every request is held open. 2 attempts of at most 15 s each: the sender
    lingers ~31 s at most, and nothing else waits for it."""
    hook_conf = {"max_concurrent_runs": 1, "webhook_attempts": 2, "webhook_timeout_s": 15}
    plan = staticmethod(lambda feed_id, n: "hang")

    def test_hang_delays_no_cancel_no_run_and_is_given_up(self):
        self.new_feed("hang-a")
        self.new_feed("hang-b")
        first = self.consume("hang-a")
        self.wait(first, statuses={"running"} | TERMINAL)
        self.expect(202, "POST", "/api/threat-feeds/cancel-task/%s/" % first, {"mode": "stop_now"})
        self.assertEqual(self.wait(first)["status"], "stopped")
        self.receiver.wait_for(first, 1)        # its sender now hangs on the receiver
        self.assertTrue(senders(first))
        # The one run slot is free, a new run starts and its cancel ends it,
        # all while the first run's webhook is still held open.
        second = self.consume("hang-b")
        self.wait(second, statuses={"running"} | TERMINAL)
        self.expect(202, "POST", "/api/threat-feeds/cancel-task/%s/" % second, {"mode": "cancel_job"})
        self.assertEqual(self.wait(second)["status"], "cancelled")
        self.assertTrue(senders(first), "the first webhook was no longer hanging: test proves nothing")
        # given up after 2 attempts of at most 15 s (and 1 s between them)
        wait_no_sender(first, 60)
        self.assertEqual(len(self.receiver.deliveries(first)), 2)
        self.assertEqual(self.receiver.deliveries(first)[1]["headers"]["X-Threatfeed-Attempt"], "2")
        wait_no_sender(second, 60)


class PerFeed(HookCase):
    hook_conf = {"webhook_attempts": 2, "webhook_timeout_s": 5}

    @classmethod
    def setUpClass(cls):
        cls.own = Receiver()
        try:
            super().setUpClass()
        except BaseException:
            cls.own.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.own.close()
        super().tearDownClass()

    def test_feed_options_override_the_global_webhook(self):
        feed = self.new_feed("own-hook", options={"webhook_url": self.own.url,
                                                  "webhook_secret": FEED_SECRET})
        self.assertNotIn(FEED_SECRET, json.dumps(feed))
        self.assertNotIn("webhook_secret", feed["options"])
        self.assertIs(feed["options"]["has_webhook_secret"], True)
        self.assertEqual(feed["options"]["webhook_url"], self.own.url)
        _, read = self.expect(200, "GET", "/api/threat-feeds/own-hook/")
        self.assertNotIn(FEED_SECRET, json.dumps(read))
        _, listed = self.expect(200, "GET", "/api/threat-feeds/")
        self.assertNotIn(FEED_SECRET, json.dumps(listed))
        self.new_feed("global-hook")

        own_task, _ = self.completed_run("own-hook")
        global_task, _ = self.completed_run("global-hook")
        [got] = self.own.wait_for(own_task, 1)
        self.check_signed(got, FEED_SECRET)
        self.assertEqual(json.loads(got["body"]), self.raw_task(own_task))
        [got] = self.receiver.wait_for(global_task, 1)
        self.check_signed(got, GLOBAL_SECRET)
        wait_no_sender(own_task, 30)
        wait_no_sender(global_task, 30)
        self.assertEqual(self.receiver.deliveries(own_task), [])
        self.assertEqual(self.own.deliveries(global_task), [])

    def test_bad_webhook_options_are_refused(self):
        for opts, field in (({"webhook_url": "ftp://127.0.0.1/"}, "options.webhook_url"),
                            ({"webhook_url": "http://a b/"}, "options.webhook_url"),
                            ({"webhook_secret": ""}, "options.webhook_secret"),
                            ({"webhook_secret": 7}, "options.webhook_secret")):
            _, data = self.expect(400, "POST", "/api/threat-feeds/",
                                  self.stack.demo_feed("bad-hook", options=opts))
            self.assertIn(field, data["error"])
        self.expect(404, "GET", "/api/threat-feeds/bad-hook/")


if __name__ == "__main__":
    unittest.main()
