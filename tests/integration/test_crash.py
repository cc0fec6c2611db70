"""A machine crash (power cut) in the middle of a run, emulated on the LMDB
store's files (issue 14 §3; README.md "Soak", "What a power cut was tested
with").

A real power cut (dm-flakey / dm-log-writes under the store) needs the
device-mapper driver, which this container does not have. What a power cut
can leave of an LMDB store follows from LMDB's commit order: the pages a
transaction writes go to free pages (copy on write; pages the previous
snapshot uses are never reused while it is one of the two meta pages'), then
the meta page naming the new root is written. The worker commits lazily
(MDB_NOSYNC, flushed every second and at the end; docs/SPEC.md §3
"Durability"), so a cut may lose the last commits, i.e. the file the next
boot finds is one whose newest meta is an earlier commit. So each test:

  1. SIGSTOPs the run's supervisor and worker at a random instant: the file
     is then what the kernel had at that instant (a write() is never half
     done for a stopped process; a transaction's data pages without its meta
     page are unreachable);
  2. copies data.mdb alone (the lock file does not survive a reboot either)
     and SIGKILLs the run (the machine is gone);
  3. makes a second copy whose newest meta page is invalidated, so LMDB opens
     the commit before it: the lost lazy commit. Never a commit older than
     the cancel: the handler's and the CLI's writes are synchronous, and
     only the worker's are lazy;
  4. opens every copy with the CLI in a fresh state dir (as after a reboot)
     and checks: the store opens, the run reaches its terminal state on that
     first access (reaper: `failed` "worker lost", or `cancelled` after its
     rollback when a cancel_job was pending), its counts equal what is
     stored, whole pages only, and a cancelled run's feed exports byte for
     byte what it did before the run.

What this does not test: the kernel writing pages out of order (LMDB with
MDB_NOSYNC relies on the file system keeping write order for integrity) and
torn sector writes. LMDB only; skipped on PostgreSQL."""
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import time
import unittest

from runenv import RunEnv, TERMINAL

PAGE = 100
SEED = int(os.environ.get("TF_CRASH_SEED") or random.SystemRandom().randrange(1, 1 << 30))
# The byte offsets of MDB_meta in an LMDB page (lmdb.h/mdb.c, 64-bit, data
# format version 1): page header 16 bytes, then mm_magic 4, mm_version 4,
# mm_address 8, mm_mapsize 8, mm_dbs[2] 2 x 48 (FREE_DBI's md_pad holds the
# page size), mm_last_pg 8, mm_txnid 8.
META_MAGIC = 0xBEEFC0DE
OFF_MAGIC, OFF_PSIZE, OFF_TXNID = 16, 16 + 24, 16 + 24 + 96 + 8


def lines(text):
    return [l for l in text.splitlines() if l.strip()]


def metas(path):
    """[(offset, txnid)] of the two meta pages of an LMDB data file."""
    with open(path, "rb") as f:
        head = f.read(4096)
        magic, = struct.unpack_from("<I", head, OFF_MAGIC)
        assert magic == META_MAGIC, "not an LMDB data file: %s" % path
        psize, = struct.unpack_from("<I", head, OFF_PSIZE)
        f.seek(0)
        both = f.read(2 * psize)
    return [(i * psize, struct.unpack_from("<Q", both, i * psize + OFF_TXNID)[0]) for i in (0, 1)]


def lose_newest_commit(path):
    """Zero the newest meta page's txnid so LMDB opens the older one (the
    commit before). Returns (newest, older) txnids."""
    (o0, t0), (o1, t1) = metas(path)
    off, newest, older = (o0, t0, t1) if t0 > t1 else (o1, t1, t0)
    with open(path, "r+b") as f:
        f.seek(off + OFF_TXNID)
        f.write(struct.pack("<Q", 0))
    return newest, older


def last_txnid(db_dir):
    return max(t for _, t in metas(os.path.join(db_dir, "data.mdb")))


def signal_if_alive(pid, sig):
    """A run may end between being looked up and being cut: the cut then
    comes after its end, which check_copy accepts too."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


@unittest.skipIf(os.environ.get("TF_IT_PG"), "LMDB's files only (PostgreSQL has its own crash recovery)")
class PowerCut(unittest.TestCase):
    conf = {"grace_period_s": 30}

    def setUp(self):
        self.rng = random.Random(SEED)
        self.env = RunEnv(conf=self.conf)
        self.copies = []

    def tearDown(self):
        report = self.env.sanitizer_report()
        self.env.close(ok=not report)
        self.assertEqual(report, "", "sanitizer report in the runs' log")

    def cut(self, task):
        """Freezes the run at this instant, copies data.mdb, kills the run.
        Returns the copy's directory."""
        procs = self.env.run_processes(task)
        for role in ("supervise", "work"):
            if role in procs:
                signal_if_alive(procs[role], signal.SIGSTOP)
        copy = os.path.join(self.env.dir, "cut-%d" % len(self.copies))
        os.makedirs(copy)
        shutil.copy(os.path.join(self.env.db, "data.mdb"), copy)
        for pid in procs.values():
            signal_if_alive(pid, signal.SIGKILL)
        self.copies.append(copy)
        return copy

    def older_copy(self, copy, floor):
        """A copy of `copy` that lost its newest commit, or None when that
        commit is at or before `floor` (a synchronous write: never lost)."""
        lost = copy + "-lost"
        shutil.copytree(copy, lost)
        newest, older = lose_newest_commit(os.path.join(lost, "data.mdb"))
        if older < floor:
            return None
        # LMDB itself (lmdb-utils) opens the copy at the older commit.
        out = subprocess.run(["mdb_stat", "-e", lost], capture_output=True, text=True).stdout
        self.assertIn("Last transaction ID: %d\n" % older, out, "seed %d: %s" % (SEED, out))
        return lost

    def reboot_cli(self, db, *args):
        """The CLI on the copied store, in a fresh state dir (after a reboot)."""
        state = db + "-state"
        os.makedirs(state, exist_ok=True)
        env = dict(self.env.env, THREATFEED_DB=db, THREATFEED_STATE_DIR=state,
                   THREATFEED_RUN_LOG=self.env.log)
        res = subprocess.run([self.env.cli_path] + list(args), env=env, capture_output=True,
                             text=True, timeout=120)
        self.assertEqual(res.returncode, 0, "seed %d: threatfeed %s on %s: %s"
                         % (SEED, " ".join(args), db, res.stderr))
        return res.stdout

    def check_copy(self, db, task, feed_id, before=None):
        """The store opens, the run ends on first access, counts are exact;
        a cancelled run restored `before` exactly."""
        t = json.loads(self.reboot_cli(db, "status", task))
        msg = "seed %d, copy %s: %s" % (SEED, db, json.dumps(t))
        self.assertIn(t["status"], TERMINAL, msg)
        export = self.reboot_cli(db, "export", feed_id)
        feed = json.loads(self.reboot_cli(db, "feed", "show", feed_id))
        self.assertIsNone(feed["active_task_id"], msg)
        stored = len(lines(export))
        self.assertEqual(feed["indicator_count"], stored, msg)
        if before is not None:
            self.assertEqual(t["status"], "cancelled", msg)
            self.assertEqual(export, before, "inexact rollback: " + msg)
        elif t["status"] != "completed":   # a cut after the run's end finds it completed
            self.assertEqual(t["status"], "failed", msg)
            self.assertIn("worker lost", t["error"] or "", msg)
        self.assertEqual(json.loads(self.reboot_cli(db, "tasks", "--active"))["tasks"], [], msg)
        return t, stored

    def test_cut_mid_ingest_keeps_whole_pages(self):
        up = self.env.upstream("--objects", "4000", "--page-size", str(PAGE), "--page-delay-ms", "60")
        self.env.add_feed("f", up)
        for i in range(3):
            up.ctl("data", {"objects": 4000 * (i + 1)})
            task = self.env.consume("f")
            self.env.wait(task, {"running"} | TERMINAL,
                          pred=lambda t: t["progress"]["pages_done"] >= 1 or t["status"] in TERMINAL)
            time.sleep(self.rng.uniform(0, 1.5))
            copy = self.cut(task)
            for db in (copy, self.older_copy(copy, 0)):
                t, stored = self.check_copy(db, task, "f")
                # The first run starts from an empty feed: created ==
                # stored == pages * PAGE (whole pages only).
                if i == 0:
                    self.assertEqual(t["progress"]["indicators_created"], stored, t)
                    self.assertEqual(stored % PAGE, 0, t)
                    self.assertEqual(t["progress"]["pages_done"] * PAGE, stored, t)
            # The live store: the reaper ends the killed run there too; the
            # next iteration cuts a later run of the same feed.
            self.env.wait(task, TERMINAL)

    def test_cut_during_cancel_job_rolls_back_exactly(self):
        up = self.env.upstream("--objects", "1000", "--page-size", str(PAGE))
        self.env.add_feed("f", up)
        self.assertEqual(self.env.wait(self.env.consume("f"), TERMINAL)["status"], "completed")
        for i in range(3):
            before = self.env.export("f")
            up.ctl("reset")
            up.ctl("data", {"objects": 1000 + 1000 * (i + 1)})
            up.ctl("bump_versions", {"count": 50})
            # Page 6 stalls: the run is surely still going when the cancel comes.
            up.ctl("faults", {"page_delay_ms": 20,
                              "stall": {"page": 6, "after_bytes": 100, "seconds": 120}})
            task = self.env.consume("f")
            self.env.wait(task, {"running"} | TERMINAL,
                          pred=lambda t: t["progress"]["pages_done"] >= 3 or t["status"] in TERMINAL)
            time.sleep(self.rng.uniform(0, 0.3))
            self.env.cancel(task, "cancel_job")
            floor = last_txnid(self.env.db)   # the cancel is durable from here on
            time.sleep(self.rng.uniform(0, 0.4))
            copy = self.cut(task)
            lost = self.older_copy(copy, floor)
            for db in (copy, lost) if lost else (copy,):
                self.check_copy(db, task, "f", before=before)
            self.env.wait(task, TERMINAL)
            # Keep the live store in step with the copies for the next round.
            self.assertEqual(self.env.export("f"), before)


if __name__ == "__main__":
    unittest.main()
