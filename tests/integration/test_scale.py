"""Many feeds and many finished tasks (issue 14 §4), at a size `make test`
can afford: the API's answers stay right — the lists, a status read of an
old task, ?active=1 finding the one run among them, a consume and a cancel
of one feed among many, and `threatfeed gc` trimming the history. The
latencies at 1,000 feeds and 100,000 tasks are `make bench` "scale"
(README.md, "Benchmarks"); nothing here is timed.

The store is filled by bench/populate (the ASan build's, `make asan`): one
real run per feed, then copies of those tasks under new ids.
"""
import os
import subprocess
import unittest

from stack import COLLECTION, Stack, TERMINAL

FEEDS = 40
TASKS = 2000


def bin_dir():
    return os.environ.get("TF_BIN_DIR", "build/asan")


class ManyFeedsAndTasks(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = Stack("lighttpd", bin_dir=bin_dir(), fcgi_procs=2,
                          upstream_args=["--objects", "3000", "--page-size", "50",
                                         "--max-page-size", "50"])
        cls.stack.start()
        populate = os.path.join(cls.stack.bin_dir, "bench", "populate")
        if not os.access(populate, os.X_OK):
            cls.stack.stop()
            raise AssertionError("%s is missing (make asan builds it)" % populate)
        res = subprocess.run([populate, cls.stack.db_dir, cls.stack.upstream_url, COLLECTION,
                              str(FEEDS), str(TASKS)], env=cls.stack.env,
                             capture_output=True, text=True, timeout=600)
        if res.returncode:
            cls.stack.stop()
            raise AssertionError("populate: %s" % res.stderr)

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()
        if cls.stack.sanitizer_reports:
            raise AssertionError("sanitizer reports: %s" % cls.stack.sanitizer_reports[:5])

    def get(self, path, want=200):
        status, _, data = self.stack.request("GET", path)
        self.assertEqual(status, want, data)
        return data

    def test_lists_and_status_reads(self):
        feeds = self.get("/api/threat-feeds/")["feeds"]
        self.assertEqual(len(feeds), FEEDS)
        # every feed's last run completed (but the one test_active... cancelled)
        self.assertLessEqual(sum(f["last_status"] != "completed" for f in feeds), 1)
        tasks = self.get("/api/threat-feeds/tasks/?limit=1000")["tasks"]
        self.assertEqual(len(tasks), 1000)
        self.assertEqual(len({t["task_id"] for t in tasks}), 1000)
        self.assertGreaterEqual(sum(t["status"] == "completed" for t in tasks), 999)
        # one feed's tasks, newest first, from the whole history
        mine = self.get("/api/threat-feeds/tasks/?feed_id=s0007&limit=1000")["tasks"]
        self.assertEqual(len(mine), TASKS // FEEDS)
        self.assertEqual({t["feed_id"] for t in mine}, {"s0007"})
        # the oldest task (each feed's real run) is read like the newest
        oldest = [f["last_task_id"] for f in feeds]
        newest = next(t["task_id"] for t in tasks if t["feed_id"] != "s0021")
        for task_id in (oldest[0], oldest[-1], newest, tasks[-1]["task_id"]):
            t = self.get("/api/threat-feeds/task-status/%s/" % task_id)
            self.assertEqual(t["task_id"], task_id)
            self.assertEqual(t["status"], "completed")

    def test_feed_list_paged(self):
        whole = [f["id"] for f in self.get("/api/threat-feeds/")["feeds"]]
        got, cursor, pages = [], None, 0
        while True:
            data = self.get("/api/threat-feeds/?limit=15" + ("&cursor=" + cursor if cursor else ""))
            self.assertLessEqual(len(data["feeds"]), 15)
            got += [f["id"] for f in data["feeds"]]
            pages += 1
            cursor = data["next_cursor"]
            if cursor is None:
                break
            self.assertLess(pages, FEEDS, "the pages never end")
        self.assertEqual(got, whole)
        self.assertEqual(pages, -(-FEEDS // 15))
        last = self.get("/api/threat-feeds/?cursor=" + whole[-1])
        self.assertEqual((last["feeds"], last["next_cursor"]), ([], None))
        status, _, data = self.stack.request("GET", "/api/threat-feeds/?cursor=Not%20ours")
        self.assertEqual((status, data["code"]), (400, "invalid_parameter"), data)
        status, _, data = self.stack.request("GET", "/api/threat-feeds/?limit=0")
        self.assertEqual((status, data["code"]), (400, "invalid_parameter"), data)

    def test_active_run_among_many_and_its_cancel(self):
        self.assertEqual(self.get("/api/threat-feeds/tasks/?active=1")["tasks"], [])
        self.stack.upstream_ctl("reset")
        self.stack.upstream_ctl("faults", {"stall": {"page": 1, "after_bytes": 100,
                                                     "seconds": 300, "times": -1}})
        try:
            status, _, data = self.stack.request("POST", "/api/threat-feeds/s0021/consume/", {})
            self.assertEqual(status, 202, data)
            task = data["task_id"]
            active = self.get("/api/threat-feeds/tasks/?active=1")["tasks"]
            self.assertEqual([t["task_id"] for t in active], [task])
            self.assertEqual(self.get("/api/threat-feeds/tasks/?active=1&feed_id=s0021")["tasks"]
                             [0]["task_id"], task)
            self.assertEqual(self.get("/api/threat-feeds/tasks/?active=1&feed_id=s0022")["tasks"],
                             [])
            self.assertEqual(self.get("/api/threat-feeds/tasks/?limit=1")["tasks"][0]["task_id"],
                             task)
            self.stack.wait_task(task, {"running"} | TERMINAL, timeout=90)
            status, _, data = self.stack.request("POST", "/api/threat-feeds/cancel-task/%s/" % task,
                                                 {"mode": "stop_now"})
            self.assertEqual(status, 202, data)
            t = self.stack.wait_task(task, TERMINAL, timeout=120)
            self.assertEqual(t["status"], "stopped", t)
            self.assertEqual(self.get("/api/threat-feeds/tasks/?active=1")["tasks"], [])
            feed = self.get("/api/threat-feeds/s0021/")
            self.assertEqual((feed["last_task_id"], feed["last_status"]), (task, "stopped"))
        finally:
            self.stack.upstream_ctl("faults", {})

    def test_zz_gc_keeps_history_keep_per_feed(self):
        """Last (zz): it removes what the other tests read."""
        keep = 30
        with open(self.stack.conf_path, "a") as f:
            f.write("history_keep = %d\n" % keep)
        res = self.stack.cli("gc")
        self.assertEqual(res.returncode, 0, res.stderr)
        tasks = self.get("/api/threat-feeds/tasks/?feed_id=s0003&limit=1000")["tasks"]
        self.assertEqual(len(tasks), keep)
        every = self.get("/api/threat-feeds/tasks/?limit=1000")["tasks"]
        self.assertEqual(len(every), 1000)
        feeds = self.get("/api/threat-feeds/")["feeds"]
        self.assertEqual(len(feeds), FEEDS)


if __name__ == "__main__":
    unittest.main()
