"""Two hosts out of namespaces, for tests/integration/test_hosts.py and
`make bench STORE=postgres` (cross_host_*):

  web host     the caller's own namespaces: lighttpd + threatfeed.fcgi (no
               agent: the handler only enqueues), and a PostgreSQL started
               here, listening on a unix socket and on the web host's end of
               a veth pair;
  worker host  a network namespace and a PID namespace made here:
               `threatfeed agent`, its supervisors and workers, and test
               upstreams on the host's own loopback. Its only way to the store
               is TCP over the veth pair, so cutting the link cuts the host.

Nothing on the web host can reach the worker host but through the store: no
shared pids (a signal could not find them), no shared network. A cancel has
to cross as a committed row plus a NOTIFY, liveness as a lease (a session
advisory lock) that PostgreSQL drops with the session.

Needs root, iproute2, util-linux `unshare` and the PostgreSQL server.
"""
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

from runenv import REPO, UPSTREAM
from stack import Stack, free_port

PG_SH = os.path.join(REPO, "scripts", "pg.sh")


def missing():
    """Why two hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (network and PID namespaces)"
    for tool in ("ip", "unshare", "psql"):
        if not shutil.which(tool):
            return "needs %s" % tool
    if not glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"):
        return "needs the PostgreSQL server"
    return None


def _sh(*argv, check=True):
    return subprocess.run(list(argv), check=check, capture_output=True, text=True)


class WorkerHost:
    """A network + PID namespace with its own loopback and one veth link to
    the web host. Its processes run under an init (`unshare --fork`) whose
    death takes every process of the host with it, as a power cut would."""

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
        """Starts the host: `script` (bash) runs as the PID namespace's first
        process after its init."""
        with open(os.path.join(self.dir, "host.log"), "ab") as log:
            self.init = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, "unshare", "--pid", "--fork", "--mount-proc",
                 "--kill-child", "bash", "-c", script],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def power_off(self):
        """Every process of the host SIGKILLed at once. The link stays up: the
        kernel closes their sockets, so the store sees the sessions end."""
        if self.init and self.init.poll() is None:
            os.killpg(self.init.pid, signal.SIGKILL)
            self.init.wait(timeout=30)
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

    def reconnect(self):
        _sh("ip", "link", "set", self.veth_root, "up")

    def _pids(self):
        out = _sh("ip", "netns", "pids", self.ns, check=False).stdout
        return [int(p) for p in out.split()]

    def remove(self):
        self.power_off()
        _sh("ip", "link", "del", self.veth_root, check=False)
        _sh("ip", "netns", "del", self.ns, check=False)


class TwoHosts:
    """The store, the web host (a Stack) and one worker host (booted by
    boot_worker_host, any number of times)."""

    def __init__(self, bin_dir=None, conf=None, pg_fast=True):
        pid = os.getpid()
        self.subnet = "10.%d.%d" % (200 + pid % 50, pid % 250)
        # In /tmp: the postgres user must reach the server's directory.
        self.tmp = tempfile.mkdtemp(prefix="tf-hosts-")
        os.chmod(self.tmp, 0o755)
        self.pg_dir = os.path.join(self.tmp, "pg")
        self.pg_port = free_port()
        self.host = self.stack = None
        self.saved_pg = os.environ.get("TF_IT_PG")
        try:
            self._start(bin_dir, conf, pg_fast, "%d" % (pid % 10000))
        except BaseException:
            self.close()
            raise

    def _start(self, bin_dir, conf, pg_fast, tag):
        # The link first: PostgreSQL can only listen on an address that exists.
        self.host = WorkerHost(tag, self.subnet, self.tmp)
        env = dict(os.environ, PG_PORT=str(self.pg_port), PG_FAST="1" if pg_fast else "0",
                   PG_LISTEN="127.0.0.1,%s" % self.host.root_ip,
                   PG_HBA_NET="%s.0/30" % self.subnet)
        uri = subprocess.run([PG_SH, "start", self.pg_dir], env=env, check=True,
                             capture_output=True, text=True).stdout.strip()
        os.environ["TF_IT_PG"] = uri   # the Stack makes its schema there
        self.stack = Stack(bin_dir=bin_dir, conf=conf, agent=False, upstream=False).start()
        # The worker host reaches the same schema over TCP.
        opts = urllib.parse.parse_qs(urllib.parse.urlsplit(self.stack.db_dir).query)["options"][0]
        self.host_db = "postgresql://postgres@%s:%d/threatfeed?options=%s" % (
            self.host.root_ip, self.pg_port, urllib.parse.quote(opts, safe=""))

    def boot_worker_host(self, *upstreams):
        """Boots the worker host: one test upstream per argument list (on the
        host's loopback) and an agent. Returns the upstreams' TAXII URLs as
        the worker host sees them."""
        bin_dir = self.stack.bin_dir
        run_dir = tempfile.mkdtemp(prefix="w-", dir=self.tmp)
        os.chmod(run_dir, 0o755)
        lines, ports = ["set -e"], []
        for i, args in enumerate(upstreams):
            pf = os.path.join(run_dir, "up%d.port" % i)
            ports.append(pf)
            lines.append("%s %s --port 0 --port-file %s --quiet --lifetime-s 3600 %s &" % (
                sys.executable, UPSTREAM, pf, " ".join(args)))
        lines.append("exec %s agent" % os.path.join(bin_dir, "threatfeed"))
        env = dict(self.stack.env, THREATFEED_DB=self.host_db, THREATFEED_STATE_DIR=run_dir,
                   THREATFEED_RUN_LOG=os.path.join(run_dir, "runs.log"),
                   THREATFEED_CONF=self.stack.conf_path,
                   THREATFEED_WORKER=os.path.join(bin_dir, "threatfeed"))
        self.host.boot("\n".join(lines), env)
        urls, deadline = [], time.monotonic() + 30
        for pf in ports:
            while not (os.path.exists(pf) and open(pf).read().strip()):
                if time.monotonic() > deadline:
                    raise AssertionError("worker host upstream did not start")
                time.sleep(0.05)
            urls.append("http://127.0.0.1:%s/taxii2/" % open(pf).read().strip())
        return urls

    def close(self):
        try:
            if self.stack:
                self.stack.stop()
        finally:
            if self.host:
                self.host.remove()
            if self.saved_pg is None:
                os.environ.pop("TF_IT_PG", None)
            else:
                os.environ["TF_IT_PG"] = self.saved_pg
            subprocess.run([PG_SH, "stop", self.pg_dir], capture_output=True)
            shutil.rmtree(self.tmp, ignore_errors=True)
