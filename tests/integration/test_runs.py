"""Runs end to end with real processes (CLI → supervisor → worker → upstream
→ store): counts, incremental runs, every cancel path, crashes and kills, and
hostile upstream content (docs/SPEC.md §3, §4). No web server involved: the API tests
cover that side. Every wait is bounded generously; nothing asserts speed."""
import json
import os
import random
import signal
import subprocess
import threading
import time
import unittest

from runenv import RunEnv, TERMINAL

PAGE = 100


def lines(text):
    return [l for l in text.splitlines() if l.strip()]


class RunTest(unittest.TestCase):
    conf = {"grace_period_s": 2}

    def setUp(self):
        self.env = RunEnv(conf=self.conf)

    def tearDown(self):
        report = self.env.sanitizer_report()
        self.env.close(ok=not report)
        self.assertEqual(report, "", "sanitizer report in the runs' log")

    def feed_up(self, feed_id="f", *args, **fields):
        up = self.env.upstream("--objects", "1000", "--page-size", str(PAGE), *args)
        self.env.add_feed(feed_id, up, **fields)
        return up

    def freeze_worker_in_transfer(self, up, task_id):
        """SIGSTOPs the run's worker while it waits on a stalled page (page 2),
        i.e. outside any store transaction — a worker that ignores SIGTERM,
        SIGUSR1 and the store. (Stopped inside a write transaction, holding
        the store's writer lock: test_freeze.py.)"""
        self.wait_pages(task_id, 2)
        deadline = time.monotonic() + 30
        while up.ctl("stats")["in_flight"] < 1:
            self.assertLess(time.monotonic(), deadline, "the stalled page was never requested")
            time.sleep(0.01)
        time.sleep(0.3)
        pid = self.env.run_processes(task_id)["work"]
        os.kill(pid, signal.SIGSTOP)
        return pid

    def going_feed(self, feed_id="f"):
        """Pages every 150 ms, then the sixth stalls: a run of it is surely
        still going when a test acts on it, however slowly a loaded machine
        runs the test. `up.ctl("faults", {})` lets the next run complete."""
        up = self.feed_up(feed_id)
        up.ctl("faults", {"page_delay_ms": 150,
                          "stall": {"page": 5, "after_bytes": 100, "seconds": 300}})
        return up

    def stalled_feed(self):
        up = self.feed_up("f")
        up.ctl("faults", {"stall": {"page": 2, "after_bytes": 100, "seconds": 300}})
        return up

    def wait_pages(self, task_id, n, timeout=60):
        return self.env.wait(task_id, {"running", "stopping", "cancelling"} | TERMINAL, timeout,
                             pred=lambda t: t["progress"]["pages_done"] >= n or t["status"] in TERMINAL)


class CompleteAndIncremental(RunTest):
    def test_complete_run_exact_counts(self):
        self.feed_up()
        t = self.env.wait(self.env.consume("f"), {"completed"} | TERMINAL)
        self.assertEqual(t["status"], "completed", t)
        p = t["progress"]
        self.assertEqual(p["objects_processed"], 1000)
        self.assertEqual(p["indicators_created"], 1000)
        self.assertEqual(p["indicators_updated"], 0)
        self.assertEqual(p["pages_done"], 10)
        self.assertGreater(p["bytes_received"], 0)
        self.assertEqual(len(lines(self.env.export("f"))), 1000)
        feed = self.env.feed("f")
        self.assertEqual(feed["indicator_count"], 1000)
        self.assertEqual(feed["last_status"], "completed")
        self.assertIsNone(feed["active_task_id"])
        self.assertIsNotNone(t["finished_at"])
        self.assertEqual(t["stage"], "done")

    def test_incremental_run_uses_added_after_and_counts_updates(self):
        up = self.feed_up()
        self.env.wait(self.env.consume("f"), {"completed"})
        up.ctl("reset")
        up.ctl("bump_versions", {"count": 5})
        t = self.env.wait(self.env.consume("f"), TERMINAL)
        self.assertEqual(t["status"], "completed", t)
        self.assertEqual(t["progress"]["objects_processed"], 5)
        self.assertEqual(t["progress"]["indicators_updated"], 5)
        self.assertEqual(t["progress"]["indicators_created"], 0)
        reqs = up.ctl("stats")["objects_requests"]
        self.assertTrue(reqs and reqs[0]["added_after"], reqs)
        self.assertEqual(len(lines(self.env.export("f"))), 1000)

    def test_observables_extracted(self):
        self.feed_up()
        self.env.wait(self.env.consume("f"), {"completed"})
        recs = [json.loads(l) for l in lines(self.env.export("f"))]
        kinds = {o["type"] for r in recs for o in r["observables"]}
        for k in ("ipv4-addr", "ipv6-addr", "domain-name", "url", "email-addr"):
            self.assertIn(k, kinds)
        self.assertTrue(any(r["value"] for r in recs if r["type"] == "indicator"))


class Cancels(RunTest):
    def test_stop_now_keeps_whole_pages_and_next_run_continues(self):
        up = self.going_feed()
        task = self.env.consume("f")
        self.wait_pages(task, 2)
        self.env.cancel(task, "stop_now")
        t = self.env.wait(task, TERMINAL)
        self.assertEqual(t["status"], "stopped", t)
        kept = t["progress"]["indicators_created"]
        self.assertEqual(kept % PAGE, 0)
        self.assertEqual(kept, t["progress"]["pages_done"] * PAGE)
        self.assertEqual(len(lines(self.env.export("f"))), kept)
        self.assertEqual(t["cancel"]["mode"], "stop_now")
        self.assertIsNotNone(t["cancel"]["acknowledged_at"])
        self.assertFalse(t["cancel"]["forced"])
        up.ctl("faults", {})
        t2 = self.env.wait(self.env.consume("f"), TERMINAL)
        self.assertEqual(t2["status"], "completed", t2)
        self.assertEqual(t2["progress"]["indicators_created"], 1000 - kept)
        self.assertEqual(len(lines(self.env.export("f"))), 1000)

    def test_cancel_job_restores_store_exactly(self):
        up = self.feed_up()
        self.env.wait(self.env.consume("f"), {"completed"})
        before = self.env.export()
        cursor_before = self.env.feed("f")["indicator_count"]
        up.ctl("reset")  # page numbers count from this run's first request
        up.ctl("data", {"objects": 1500})
        up.ctl("bump_versions", {"count": 50})
        # The fourth page stalls, so the run is surely still going when the
        # cancel comes, however fast the store writes the first three (a
        # page delay was not enough once PostgreSQL wrote a page in a few
        # statements: the run could finish before the cancel).
        up.ctl("faults", {"stall": {"page": 3, "after_bytes": 100, "seconds": 120}})
        task = self.env.consume("f")
        self.wait_pages(task, 3)
        self.env.cancel(task, "cancel_job")
        t = self.env.wait(task, TERMINAL)
        self.assertEqual(t["status"], "cancelled", t)
        self.assertGreater(t["rolled_back"], 0)
        self.assertEqual(self.env.export(), before)
        self.assertEqual(self.env.feed("f")["indicator_count"], cursor_before)

    def test_cancel_while_upstream_stalls_mid_body(self):
        up = self.feed_up()
        up.ctl("faults", {"stall": {"page": 1, "after_bytes": 200, "seconds": 120}})
        task = self.env.consume("f")
        self.wait_pages(task, 1)
        deadline = time.monotonic() + 30
        while up.ctl("stats")["in_flight"] < 1:
            self.assertLess(time.monotonic(), deadline, "the stalled page was never requested")
            time.sleep(0.02)
        self.env.cancel(task, "stop_now")
        # The stall lasts 120 s; ending well inside it proves the transfer was interrupted.
        t = self.env.wait(task, TERMINAL, timeout=30)
        self.assertEqual(t["status"], "stopped", t)
        self.assertFalse(t["cancel"]["forced"])
        self.assertEqual(t["progress"]["indicators_created"], PAGE)

    def test_cancel_during_rate_limit_wait(self):
        up = self.feed_up()
        up.ctl("faults", {"status": {"page": 1, "code": 429, "retry_after": 120, "times": -1}})
        task = self.env.consume("f")
        self.env.wait(task, {"running"} | TERMINAL, pred=lambda t: t["stage"] == "rate_limited"
                      or t["status"] in TERMINAL)
        self.env.cancel(task, "stop_now")
        t = self.env.wait(task, TERMINAL, timeout=30)
        self.assertEqual(t["status"], "stopped", t)
        self.assertTrue(any("429" in w or "rate" in w for w in t["warnings"]), t["warnings"])

    def test_double_cancel_is_harmless(self):
        self.going_feed()
        task = self.env.consume("f")
        self.wait_pages(task, 1)
        self.env.cancel(task, "stop_now")
        second = self.env.cancel(task, "stop_now", check=False)
        self.assertIn(second.returncode, (0, 4))
        t = self.env.wait(task, TERMINAL)
        self.assertEqual(t["status"], "stopped")
        self.assertEqual(self.env.cancel(task, "stop_now", check=False).returncode, 4)

    def test_hung_worker_is_killed_after_grace(self):
        up = self.stalled_feed()
        task = self.env.consume("f")
        self.freeze_worker_in_transfer(up, task)
        self.env.cancel(task, "stop_now")
        t = self.env.wait(task, TERMINAL, timeout=60)
        self.assertEqual(t["status"], "stopped", t)
        self.assertTrue(t["cancel"]["forced"], t)
        self.assertEqual(t["progress"]["indicators_created"], 2 * PAGE)
        self.assertEqual(len(lines(self.env.export("f"))), 2 * PAGE)

    def test_hung_worker_with_cancel_job_is_killed_and_rolled_back(self):
        up = self.stalled_feed()
        task = self.env.consume("f")
        self.freeze_worker_in_transfer(up, task)
        self.env.cancel(task, "cancel_job")
        t = self.env.wait(task, TERMINAL, timeout=60)
        self.assertEqual(t["status"], "cancelled", t)
        self.assertTrue(t["cancel"]["forced"])
        self.assertEqual(self.env.export("f"), "")


class Escalation(RunTest):
    """Both cancels must reach the frozen worker's run before the grace
    period ends it, so the grace period is longer than any slow machine
    takes for two CLI calls; the test resumes the worker itself."""
    conf = {"grace_period_s": 120}

    def test_escalation_stop_now_to_cancel_job_rolls_back(self):
        up = self.stalled_feed()
        task = self.env.consume("f")
        pid = self.freeze_worker_in_transfer(up, task)   # can't act on the first cancel
        try:
            self.env.cancel(task, "stop_now")
            self.assertEqual(self.env.status(task)["status"], "stopping")
            self.env.cancel(task, "cancel_job")
            self.assertEqual(self.env.status(task)["status"], "cancelling")
        finally:
            os.kill(pid, signal.SIGCONT)
        t = self.env.wait(task, TERMINAL)
        self.assertEqual(t["status"], "cancelled", t)
        self.assertEqual(t["cancel"]["mode"], "cancel_job")
        self.assertEqual(t["rolled_back"], 2 * PAGE)
        self.assertEqual(self.env.export("f"), "")


class Queue(unittest.TestCase):
    def test_cancel_while_queued_never_fetches(self):
        env = RunEnv(conf={"max_concurrent_runs": 1, "grace_period_s": 2})
        try:
            # busy never ends by itself (its fourth page stalls); the test stops it
            busy = env.upstream("--objects", "1000", "--page-size", "100", "--page-delay-ms", "300")
            busy.ctl("faults", {"page_delay_ms": 300,
                                "stall": {"page": 3, "after_bytes": 100, "seconds": 600}})
            idle = env.upstream("--objects", "1000", "--page-size", "100")
            env.add_feed("busy", busy)
            env.add_feed("idle", idle)
            first = env.consume("busy")
            env.wait(first, {"running"})
            second = env.consume("idle")
            time.sleep(0.5)
            self.assertEqual(env.status(second)["status"], "queued")
            env.cancel(second, "cancel_job")
            t = env.wait(second, TERMINAL)
            self.assertEqual(t["status"], "cancelled")
            self.assertEqual(idle.ctl("stats")["total_requests"], 0)
            env.cancel(first, "stop_now")
            env.wait(first, TERMINAL)
        finally:
            env.close()

    def test_queued_run_starts_when_slot_frees(self):
        env = RunEnv(conf={"max_concurrent_runs": 1})
        try:
            a = env.upstream("--objects", "300", "--page-size", "100", "--page-delay-ms", "100")
            b = env.upstream("--objects", "300", "--page-size", "100")
            env.add_feed("a", a)
            env.add_feed("b", b)
            ta = env.consume("a")
            tb = env.consume("b")
            self.assertEqual(env.wait(ta, TERMINAL)["status"], "completed")
            self.assertEqual(env.wait(tb, TERMINAL)["status"], "completed")
        finally:
            env.close()


class QueueLimits(unittest.TestCase):
    def test_ten_consumes_with_limit_two(self):
        env = RunEnv(conf={"max_concurrent_runs": 2})
        try:
            # 3 s a run: long enough for the sampling below to see two at
            # once on a loaded machine
            up = env.upstream("--objects", "500", "--page-size", "100", "--page-delay-ms", "600")
            for i in range(10):
                env.add_feed("q%d" % i, up)
            tasks = [env.consume("q%d" % i) for i in range(10)]
            most, rounds = 0, 0
            deadline = time.monotonic() + 180
            while True:
                # Every process of every run, sampled often; statuses now and then.
                workers = sum(1 for t in tasks if "work" in env.run_processes(t))
                most = max(most, workers)
                rounds += 1
                if rounds % 20 == 0:
                    done = [env.status(t) for t in tasks]
                    if all(t["status"] in TERMINAL for t in done):
                        break
                    self.assertLess(time.monotonic(), deadline, [t["status"] for t in done])
                time.sleep(0.005)
            self.assertLessEqual(most, 2)
            self.assertEqual(most, 2)
            self.assertEqual([t["status"] for t in done], ["completed"] * 10)
            # Oldest first: when two slots free at once, the two oldest waiting
            # runs may claim them in either order, so a run may start at most
            # one place (max_concurrent_runs - 1) from its place in line.
            started = [t["started_at"] for t in done]
            rank = sorted(range(10), key=lambda i: started[i])
            for place, i in enumerate(rank):
                self.assertLess(abs(place - i), 2, ("runs did not start oldest first", started))
        finally:
            env.close()

    def test_queued_tasks_show_their_place_in_line(self):
        env = RunEnv(conf={"max_concurrent_runs": 1})
        try:
            # a never ends by itself (its fourth page stalls); the test stops it
            slow = env.upstream("--objects", "1000", "--page-size", "100", "--page-delay-ms", "300")
            slow.ctl("faults", {"page_delay_ms": 300,
                                "stall": {"page": 3, "after_bytes": 100, "seconds": 600}})
            up = env.upstream("--objects", "1000", "--page-size", "100", "--page-delay-ms", "300")
            env.add_feed("a", slow)
            for f in ("b", "c"):
                env.add_feed(f, up)
            ta, tb, tc = (env.consume(f) for f in ("a", "b", "c"))
            env.wait(ta, {"running"})
            self.assertEqual(env.status(tb)["message"], "queued: 1 of 2 waiting for a run slot")
            self.assertEqual(env.status(tc)["message"], "queued: 2 of 2 waiting for a run slot")
            env.cancel(tb, "cancel_job")                 # leaves the line: c moves up
            env.wait(tb, TERMINAL)
            self.assertEqual(env.status(tc)["message"], "queued: 1 of 1 waiting for a run slot")
            env.cancel(ta, "stop_now")
            self.assertEqual(env.wait(tc, TERMINAL, timeout=90)["status"], "completed")
        finally:
            env.close()

    def test_queue_drains_after_supervisor_is_killed(self):
        env = RunEnv(conf={"max_concurrent_runs": 1})
        try:
            up = env.upstream("--objects", "1000", "--page-size", "100", "--page-delay-ms", "300")
            # a's fourth page stalls 10 s, then a goes on: a is surely running
            # when the test looks, however loaded the machine
            up.ctl("faults", {"page_delay_ms": 300,
                              "stall": {"page": 3, "after_bytes": 100, "seconds": 10}})
            for f in ("a", "b", "c"):
                env.add_feed(f, up)
            ta, tb, tc = (env.consume(f) for f in ("a", "b", "c"))
            env.wait(ta, {"running"})
            os.kill(env.run_processes(ta)["supervise"], signal.SIGKILL)
            for t in (ta, tb, tc):   # the worker hands on the slot itself
                self.assertEqual(env.wait(t, TERMINAL, timeout=90)["status"], "completed")
        finally:
            env.close()

    def test_tick_recovers_queue_after_whole_run_is_killed(self):
        env = RunEnv(conf={"max_concurrent_runs": 1})
        try:
            up = env.upstream("--objects", "1000", "--page-size", "100", "--page-delay-ms", "300")
            for f in ("a", "b"):
                env.add_feed(f, up)
            ta, tb = env.consume("a"), env.consume("b")
            env.wait(ta, {"running"})
            # Freeze both first: a worker killed before its supervisor would
            # be seen by that supervisor, which then hands on the slot itself.
            procs = list(env.run_processes(ta).values())
            for pid in procs:
                os.kill(pid, signal.SIGSTOP)
            for pid in procs:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.3)
            # Usually still queued; a waiting supervisor of b may also find
            # a's slot dead and take it first (the queue never strands).
            self.assertIn(env.status(tb)["status"], {"queued", "running"})
            env.cli("tick")
            self.assertEqual(env.status(ta)["status"], "failed")
            self.assertEqual(env.wait(tb, TERMINAL, timeout=90)["status"], "completed")
        finally:
            env.close()


class Crashes(RunTest):
    def test_sigkill_worker_at_random_instants_leaves_whole_batches(self):
        rnd = random.Random(1234)
        up = self.env.upstream("--objects", "500", "--page-size", str(PAGE), "--page-delay-ms", "15")
        for trial in range(50):
            fid = "k%d" % trial
            self.env.add_feed(fid, up)
            task = self.env.consume(fid)
            deadline = time.monotonic() + 20
            procs = {}
            while "work" not in procs and time.monotonic() < deadline:
                procs = self.env.run_processes(task)
                if self.env.status(task)["status"] in TERMINAL:
                    break
                time.sleep(0.005)
            time.sleep(rnd.uniform(0, 0.12))
            if "work" in procs:
                try:
                    os.kill(procs["work"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
            t = self.env.wait(task, TERMINAL, timeout=30)
            stored = len(lines(self.env.export(fid)))
            self.assertEqual(stored % PAGE, 0, (trial, t))
            self.assertEqual(stored, t["progress"]["indicators_created"], (trial, t))
            self.assertEqual(self.env.feed(fid)["indicator_count"], stored)
            if t["status"] == "failed":
                self.assertIn("signal", t["error"])

    def test_sigkill_supervisor_and_worker_reports_worker_lost(self):
        self.going_feed()
        task = self.env.consume("f")
        self.wait_pages(task, 1)
        procs = self.env.run_processes(task)
        for pid in procs.values():
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        t = self.env.status(task)        # the next access notices
        self.assertEqual(t["status"], "failed", t)
        self.assertEqual(t["error"], "worker lost")
        self.assertIsNone(self.env.feed("f")["active_task_id"])
        t2 = self.env.consume("f")       # and the feed is free again
        self.assertTrue(t2)

    def test_one_active_run_per_feed_under_concurrent_consumes(self):
        self.going_feed()
        results = []

        def go():
            results.append(self.env.cli("consume", "f", check=False))
        threads = [threading.Thread(target=go) for _ in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        ok = [r for r in results if r.returncode == 0]
        self.assertEqual(len(ok), 1, [r.stderr for r in results])
        self.assertTrue(all(r.returncode == 4 for r in results if r.returncode != 0))
        task = json.loads(ok[0].stdout)["task_id"]
        self.env.cancel(task)
        self.env.wait(task, TERMINAL)


class StoreDiskFull(RunTest):
    """The store on a 3 MiB tmpfs that a run fills: the run fails with a clear
    error, keeps whole pages whose counts match what is stored, and the store
    stays readable. Needs root (mount); skipped, saying so, without it."""

    def setUp(self):
        super().setUp()
        self.mnt = os.path.join(self.env.dir, "small")
        os.makedirs(self.mnt)
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", self.mnt],
                             capture_output=True, text=True)
        if res.returncode != 0:
            self.skipTest("cannot mount a small tmpfs here: %s" % res.stderr.strip())
        self.env.db = os.path.join(self.mnt, "db")
        self.env.env["THREATFEED_DB"] = self.env.db

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            subprocess.run(["umount", "-l", self.mnt], capture_output=True)

    def test_disk_full_fails_the_run_with_whole_pages(self):
        up = self.env.upstream("--objects", "20000", "--page-size", str(PAGE))
        self.env.add_feed("f", up)
        t = self.env.wait(self.env.consume("f"), TERMINAL, timeout=120)
        self.assertEqual(t["status"], "failed", t)
        self.assertIn("no space left on the store's disk", t["error"])
        self.assertIn("committed pages", t["error"])
        stored = len(lines(self.env.export("f")))
        self.assertGreater(stored, 0)
        self.assertLess(stored, 20000)
        self.assertEqual(stored % PAGE, 0, t)
        self.assertEqual(stored, t["progress"]["indicators_created"], t)
        self.assertEqual(t["progress"]["pages_done"] * PAGE, stored, t)
        self.assertEqual(self.env.feed("f")["indicator_count"], stored)
        self.assertIsNone(self.env.feed("f")["active_task_id"])


class HostileContent(RunTest):
    """Each fault fails the run with a clear error and stores nothing of the bad
    page: page 0 is good (100 records), page 1 is bad."""

    def run_with(self, faults, expect_in_error, page=1, **feed_fields):
        up = self.feed_up("f", **feed_fields)
        if faults:
            for v in faults.values():
                if isinstance(v, dict) and "page" not in v:
                    v["page"] = page
            up.ctl("faults", faults)
        t = self.env.wait(self.env.consume("f"), TERMINAL, timeout=90)
        self.assertEqual(t["status"], "failed", t)
        self.assertTrue(t["error"], t)
        self.assertIn(expect_in_error.lower(), t["error"].lower(), t)
        stored = len(lines(self.env.export("f")))
        self.assertEqual(stored, PAGE * page, t)
        self.assertEqual(t["progress"]["indicators_created"], stored)
        return t

    def test_truncated_body(self):
        self.run_with({"truncate": {}}, "")

    def test_bad_json(self):
        self.run_with({"bad_json": {}}, "json")

    def test_html_instead_of_json(self):
        self.run_with({"html": {}}, "html")

    def test_body_over_limit(self):
        self.run_with({"huge": {"bytes": 40 * 1024 * 1024}}, "larger")

    def test_deep_nesting(self):
        self.run_with({"deep": {"depth": 10000}}, "")

    def test_too_many_objects(self):
        self.run_with({"many": {"objects": 20000}}, "objects")

    def test_invalid_utf8(self):
        self.run_with({"invalid_utf8": {}}, "")

    def test_wrong_envelope_types(self):
        self.run_with({"wrong_types": {"variant": "envelope"}}, "")

    def test_redirect_to_other_scheme(self):
        self.run_with({"redirect": {"location": "ftp://127.0.0.1/x"}}, "redirect")

    def test_unauthorized(self):
        self.run_with({"status": {"code": 401}}, "401")

    def test_not_found(self):
        self.run_with({"status": {"code": 404, "times": -1}}, "404")

    def test_server_error_after_retries(self):
        t = self.run_with({"status": {"code": 500, "times": -1, "retry_after": 0}}, "500")
        self.assertTrue(t["warnings"], t)

    def test_next_loop(self):
        up = self.feed_up("f")
        up.ctl("faults", {"loop_next": {"page": "all", "times": -1}})
        t = self.env.wait(self.env.consume("f"), TERMINAL, timeout=90)
        self.assertEqual(t["status"], "failed", t)
        self.assertIn("loop", t["error"].lower())

    def test_endless_more(self):
        up = self.feed_up("f")
        up.ctl("faults", {"endless_more": {"page": 1, "times": -1}})
        t = self.env.wait(self.env.consume("f"), TERMINAL, timeout=90)
        self.assertEqual(t["status"], "failed", t)
        self.assertEqual(len(lines(self.env.export("f"))), PAGE)

    def test_wrong_field_types_skip_objects_with_warnings(self):
        up = self.feed_up("f")
        up.ctl("faults", {"wrong_types": {"page": 1, "variant": "fields"}})
        t = self.env.wait(self.env.consume("f"), TERMINAL, timeout=90)
        # Malformed objects are skipped with a warning; the run goes on.
        self.assertEqual(t["status"], "completed", t)
        self.assertTrue(t["warnings"], t)


class ScheduleAndHistory(unittest.TestCase):
    def setUp(self):
        self.env = RunEnv(conf={"history_keep": 3})

    def tearDown(self):
        self.env.close()

    def tick(self):
        return json.loads(self.env.cli("tick").stdout)

    def test_tick_fires_once_per_interval(self):
        up = self.env.upstream("--objects", "200", "--page-size", "100")
        self.env.add_feed("sched", up, interval_s=3600)
        self.env.add_feed("manual", up)            # interval 0: never scheduled
        self.assertEqual(self.tick()["runs_created"], 1)
        self.assertEqual(self.tick()["runs_created"], 0)
        tasks = json.loads(self.env.cli("tasks", "--feed", "sched").stdout)["tasks"]
        self.assertEqual(len(tasks), 1)
        self.env.wait(tasks[0]["task_id"], TERMINAL)
        self.assertEqual(self.tick()["runs_created"], 0)   # began < 1 h ago
        self.assertEqual(json.loads(self.env.cli("tasks", "--feed", "manual").stdout)["tasks"], [])

    def test_short_interval_fires_again_and_disabled_never(self):
        up = self.env.upstream("--objects", "100", "--page-size", "100")
        self.env.add_feed("fast", up, interval_s=1)
        self.env.add_feed("off", up, interval_s=1, enabled=False)
        self.assertEqual(self.tick()["runs_created"], 1)
        first = json.loads(self.env.cli("tasks", "--feed", "fast").stdout)["tasks"][0]
        self.env.wait(first["task_id"], TERMINAL)
        time.sleep(1.1)
        self.assertEqual(self.tick()["runs_created"], 1)
        self.assertEqual(json.loads(self.env.cli("tasks", "--feed", "off").stdout)["tasks"], [])

    def test_two_ticks_racing_start_one_run(self):
        up = self.env.upstream("--objects", "200", "--page-size", "100", "--page-delay-ms", "50")
        for i in range(5):
            self.env.add_feed("r%d" % i, up, interval_s=3600)
        results = []
        threads = [threading.Thread(target=lambda: results.append(self.tick())) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        self.assertEqual(sum(r["runs_created"] for r in results), 5)
        tasks = json.loads(self.env.cli("tasks").stdout)["tasks"]
        self.assertEqual(sorted(t["feed_id"] for t in tasks), ["r%d" % i for i in range(5)])
        for t in tasks:
            self.env.wait(t["task_id"], TERMINAL)

    def test_gc_keeps_history_per_feed(self):
        up = self.env.upstream("--objects", "100", "--page-size", "100")
        self.env.add_feed("h", up)
        for _ in range(5):
            self.env.wait(self.env.consume("h"), TERMINAL)
        out = json.loads(self.env.cli("gc").stdout)
        self.assertEqual(out["tasks_deleted"], 2)
        tasks = json.loads(self.env.cli("tasks", "--feed", "h").stdout)["tasks"]
        self.assertEqual(len(tasks), 3)

    def test_test_connection(self):
        up = self.env.upstream("--objects", "10", "--username", "u", "--password", "p")
        self.env.add_feed("good", up, username="u", secret="p")
        self.env.add_feed("bad", up, username="u", secret="wrong")
        good = json.loads(self.env.cli("test-connection", "good").stdout)
        bad = json.loads(self.env.cli("test-connection", "bad").stdout)
        self.assertTrue(good["ok"], good)
        self.assertFalse(bad["ok"], bad)
        self.assertIn("401", bad["detail"])
        self.assertNotIn("wrong", bad["detail"])


if __name__ == "__main__":
    unittest.main()
