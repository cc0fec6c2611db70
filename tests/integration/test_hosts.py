"""Two hosts out of namespaces (issue 13 §6): runs on one host, the API on
another, one PostgreSQL between them.

  web host     the test's own namespaces: lighttpd + threatfeed.fcgi (no
               agent: the handler only enqueues), and PostgreSQL listening on
               a unix socket and on the root end of a veth pair;
  worker host  a network namespace and a PID namespace this test creates:
               `threatfeed agent`, its supervisors and workers, and the test
               upstream on the host's own loopback. Its only way to the store
               is TCP over the veth pair, so cutting the link cuts the host.

Nothing the handler does can reach the worker host but the store: no shared
pids (another PID namespace: a signal could not find them), no shared
network. A cancel has to cross as a committed row plus a NOTIFY, liveness as
a lease (a session advisory lock) that PostgreSQL drops with the session.

Needs root (namespaces), iproute2 and util-linux `unshare`; skipped without.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from runenv import COLLECTION, REPO, TERMINAL, UPSTREAM  # noqa: E402
from stack import Stack, free_port  # noqa: E402

PG_SH = os.path.join(REPO, "scripts", "pg.sh")


def _missing():
    if os.geteuid() != 0:
        return "needs root (network and PID namespaces)"
    for tool in ("ip", "unshare", "psql"):
        if not shutil.which(tool):
            return "needs %s" % tool
    import glob
    if not glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"):
        return "needs the PostgreSQL server"
    return None


def _sh(*argv, check=True):
    return subprocess.run(list(argv), check=check, capture_output=True, text=True)


class WorkerHost:
    """A network + PID namespace with its own loopback, one veth link to the
    web host, and an init (`unshare --fork`) whose death takes every process
    of the host with it, as a power cut would."""

    def __init__(self, tag, subnet, state_dir):
        self.ns = "tf-w%s" % tag
        self.veth_root, self.veth_host = "tfr%s" % tag, "tfh%s" % tag
        self.root_ip, self.host_ip = subnet + ".1", subnet + ".2"
        self.dir = state_dir
        self.init = None
        _sh("ip", "netns", "add", self.ns)
        _sh("ip", "link", "add", self.veth_root, "type", "veth", "peer", "name", self.veth_host)
        _sh("ip", "link", "set", self.veth_host, "netns", self.ns)
        _sh("ip", "addr", "add", self.root_ip + "/30", "dev", self.veth_root)
        _sh("ip", "link", "set", self.veth_root, "up")
        self.exec_("ip", "addr", "add", self.host_ip + "/30", "dev", self.veth_host)
        self.exec_("ip", "link", "set", self.veth_host, "up")
        self.exec_("ip", "link", "set", "lo", "up")

    def exec_(self, *argv):
        return _sh("ip", "netns", "exec", self.ns, *argv)

    def boot(self, script, env):
        """Starts the host's processes: `script` runs as the PID namespace's
        first child (under unshare's init)."""
        log = open(os.path.join(self.dir, "host.log"), "ab")
        self.init = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "unshare", "--pid", "--fork", "--mount-proc",
             "--kill-child", "bash", "-c", script],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def power_off(self):
        """SIGKILL to the namespace's processes all at once (the kernel kills
        a PID namespace with its init). The link stays: the kernel closes the
        sockets, so the store sees the sessions end at once."""
        if self.init and self.init.poll() is None:
            os.killpg(self.init.pid, signal.SIGKILL)
            self.init.wait(timeout=30)
        # unshare's child is the namespace's init: wait until it is gone
        deadline = time.monotonic() + 30
        while self._pids() and time.monotonic() < deadline:
            for pid in self._pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)

    def cut(self):
        """The host loses its network: packets vanish, nothing is reset."""
        _sh("ip", "link", "set", self.veth_root, "down")

    def _pids(self):
        out = _sh("ip", "netns", "pids", self.ns, check=False).stdout
        return [int(p) for p in out.split()]

    def remove(self):
        self.power_off()
        _sh("ip", "link", "del", self.veth_root, check=False)
        _sh("ip", "netns", "del", self.ns, check=False)


@unittest.skipIf(_missing(), _missing() or "")
class TwoHosts(unittest.TestCase):
    """Each test boots a fresh worker host against one store and one web
    host (setUpClass)."""

    @classmethod
    def setUpClass(cls):
        tag = "%d" % (os.getpid() % 10000)
        cls.subnet = "10.%d.%d" % (200 + os.getpid() % 50, os.getpid() % 250)
        # In /tmp: the postgres user must reach the server's directory.
        cls.tmp = tempfile.mkdtemp(prefix="tf-hosts-")
        os.chmod(cls.tmp, 0o755)
        cls.pg_dir = os.path.join(cls.tmp, "pg")
        cls.pg_port = free_port()
        env = dict(os.environ, PG_PORT=str(cls.pg_port), PG_FAST="1",
                   PG_LISTEN="127.0.0.1,%s.1" % cls.subnet, PG_HBA_NET="%s.0/30" % cls.subnet)
        cls.host = None
        cls.tag = tag
        # The link first: PostgreSQL can only listen on an address that exists.
        cls.host = WorkerHost(tag, cls.subnet, cls.tmp)
        uri = subprocess.run([PG_SH, "start", cls.pg_dir], env=env, check=True,
                             capture_output=True, text=True).stdout.strip()
        cls.saved_pg = os.environ.get("TF_IT_PG")
        os.environ["TF_IT_PG"] = uri
        try:
            cls.stack = Stack(conf={"grace_period_s": 2}, agent=False,
                              upstream=False).start()
        except BaseException:
            cls._teardown()
            raise
        # The worker host reaches the same schema over TCP.
        opts = urllib.parse.parse_qs(urllib.parse.urlsplit(cls.stack.db_dir).query)["options"][0]
        cls.host_db = "postgresql://postgres@%s:%d/threatfeed?options=%s" % (
            cls.host.root_ip, cls.pg_port, urllib.parse.quote(opts, safe=""))

    @classmethod
    def _teardown(cls):
        if cls.host:
            cls.host.remove()
        if cls.saved_pg is None:
            os.environ.pop("TF_IT_PG", None)
        else:
            os.environ["TF_IT_PG"] = cls.saved_pg
        subprocess.run([PG_SH, "stop", cls.pg_dir], capture_output=True)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.stack.stop()
        finally:
            cls._teardown()

    def tearDown(self):
        self.host.power_off()
        _sh("ip", "link", "set", self.host.veth_root, "up")

    # ---------------------------------------------------------------- helpers
    def boot_worker_host(self, *upstreams):
        """Boots the worker host: one test upstream per argument list (on the
        host's loopback, ports written to files) and an agent. Returns the
        upstreams' base URLs as the worker host sees them."""
        bin_dir = self.stack.bin_dir
        run_dir = tempfile.mkdtemp(prefix="w-", dir=self.tmp)
        os.chmod(run_dir, 0o755)
        lines = ["set -e"]
        ports = []
        for i, args in enumerate(upstreams):
            pf = os.path.join(run_dir, "up%d.port" % i)
            ports.append(pf)
            lines.append("%s %s --port 0 --port-file %s --quiet --lifetime-s 900 %s &" % (
                sys.executable, UPSTREAM, pf, " ".join(args)))
        lines.append("exec %s agent" % os.path.join(bin_dir, "threatfeed"))
        env = {k: v for k, v in self.stack.env.items()}
        env.update(THREATFEED_DB=self.host_db, THREATFEED_STATE_DIR=run_dir,
                   THREATFEED_RUN_LOG=os.path.join(run_dir, "runs.log"),
                   THREATFEED_CONF=self.stack.conf_path,
                   THREATFEED_WORKER=os.path.join(bin_dir, "threatfeed"))
        self.host.boot("\n".join(lines), env)
        urls = []
        deadline = time.monotonic() + 30
        for pf in ports:
            while not os.path.exists(pf) or not open(pf).read().strip():
                self.assertLess(time.monotonic(), deadline, "worker host upstream did not start")
                time.sleep(0.05)
            urls.append("http://127.0.0.1:%s/taxii2/" % open(pf).read().strip())
        return urls

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


if __name__ == "__main__":
    unittest.main()
