"""Hostile clients beside a run (issue 14 §4): many slow and half-open
connections held open against the web server while a run is going, and the
run is cancelled through the API in the middle of them.

What must hold (docs/SPEC.md §2, §3): the cancel is answered 202 and the run
reaches its terminal state; health and status reads keep being answered; the
web server survives and the handler pool is not starved. The latencies seen
are written to the test log (stderr), never asserted: a loaded machine must
not fail this test.

The hostile connections (HOSTILE per kind):
  dribble    request headers sent one byte at a time, never finished
  slow_body  a POST to /api/ announcing a body (Content-Length) that never
             comes, or comes a byte at a time (also aimed at the cancel URL)
  idle       connected, nothing sent
  half_shut  a partial request, then shutdown(SHUT_WR)

Why the handler is not starved: lighttpd (server.stream-request-body = 0, its
default, kept in deploy/lighttpd/threatfeed.conf) and nginx
(fastcgi_request_buffering on) read a whole request — headers and body —
before they pass it to a FastCGI handler, so a slow client holds only a
connection slot of the web server, never one of the few handler processes.
"""
import os
import socket
import sys
import threading
import time
import unittest

from stack import Stack, TERMINAL, missing_requirements

HOSTILE = int(os.environ.get("TF_HOSTILE_PER_KIND", "50"))
ACTIVE = frozenset(("queued", "running", "stopping", "cancelling"))


def bin_dir():
    return os.environ.get("TF_BIN_DIR", "build/asan")


def log(msg):
    sys.stderr.write("hostile: %s\n" % msg)
    sys.stderr.flush()


class Hostiles:
    """The hostile sockets and one thread that keeps dribbling bytes into the
    dribble and slow_body ones (so no idle timeout ends them early)."""

    def __init__(self, port, cancel_path):
        self.port = port
        self.socks = {"dribble": [], "slow_body": [], "idle": [], "half_shut": []}
        self.pending = {}   # sock -> bytes still to dribble
        self.errors = 0     # sockets the server closed while we dribbled
        self.stop_ev = threading.Event()
        self.cancel_path = cancel_path
        self.thread = None

    def _connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def open(self, n):
        for i in range(n):
            s = self._connect()
            self.pending[s] = (b"GET /api/threat-feeds/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               b"X-Slow: " + b"a" * 4000 + b"\r\n\r\n")
            self.socks["dribble"].append(s)

            s = self._connect()
            # Half of them aimed at the cancel URL itself, the one a user waits on.
            path = self.cancel_path if i % 2 else "/api/threat-feeds/"
            s.sendall(("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       "Content-Length: 60000\r\n\r\n{" % path).encode())
            self.pending[s] = b" " * 59999
            self.socks["slow_body"].append(s)

            self.socks["idle"].append(self._connect())

            s = self._connect()
            if i % 2:
                s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.")
            else:
                s.sendall(b"POST /api/threat-feeds/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"id\":")
            s.shutdown(socket.SHUT_WR)
            self.socks["half_shut"].append(s)
        self.thread = threading.Thread(target=self._dribble, daemon=True)
        self.thread.start()

    def _dribble(self):
        while not self.stop_ev.wait(0.2):
            for s, rest in list(self.pending.items()):
                if not rest:
                    continue
                try:
                    s.send(rest[:1])
                    self.pending[s] = rest[1:]
                except OSError:
                    self.pending[s] = b""
                    self.errors += 1

    def count(self):
        return sum(len(v) for v in self.socks.values())

    def still_open(self):
        """How many sockets the server has not closed yet (a non-blocking
        peek: EOF or a reset means the server let go)."""
        alive = 0
        for group in self.socks.values():
            for s in group:
                try:
                    s.setblocking(False)
                    data = s.recv(1, socket.MSG_PEEK)
                    alive += 0 if data == b"" else 1
                except BlockingIOError:
                    alive += 1
                except OSError:
                    pass
        return alive

    def close(self):
        self.stop_ev.set()
        if self.thread:
            self.thread.join(5)
        for group in self.socks.values():
            for s in group:
                s.close()


class HostileLighttpd(unittest.TestCase):
    server = "lighttpd"
    fcgi_procs = 2

    @classmethod
    def setUpClass(cls):
        why = missing_requirements(cls.server)
        if why:
            raise unittest.SkipTest(why)
        cls.stack = Stack(cls.server, bin_dir=bin_dir(), fcgi_procs=cls.fcgi_procs,
                          upstream_args=["--objects", "3000", "--page-size", "50",
                                         "--max-page-size", "50"])
        cls.stack.start()

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()
        if cls.stack.sanitizer_reports:
            raise AssertionError("sanitizer reports: %s" % cls.stack.sanitizer_reports[:5])

    def api(self, method, path, body=None, timeout=60):
        t0 = time.monotonic()
        status, _, data = self.stack.request(method, path, body=body, timeout=timeout)
        return status, data, (time.monotonic() - t0) * 1000

    def stalled_run(self, feed_id):
        """A run whose worker sits in a stalled transfer (page 2): it is surely
        still going when the hostile connections are up and the cancel comes."""
        self.stack.upstream_ctl("reset")
        self.stack.upstream_ctl("faults", {"stall": {"page": 2, "after_bytes": 100,
                                                     "seconds": 300, "times": -1}})
        status, data, _ = self.api("POST", "/api/threat-feeds/",
                                   self.stack.demo_feed(feed_id, options={"page_size": 50}))
        self.assertEqual(status, 201, data)
        status, data, _ = self.api("POST", "/api/threat-feeds/%s/consume/" % feed_id, {})
        self.assertEqual(status, 202, data)
        task = data["task_id"]
        self.stack.wait_task(task, {"running"}, timeout=90,
                             interval=0.1)
        deadline = time.monotonic() + 90
        while self.stack.upstream_ctl("stats", method="GET")["in_flight"] < 1:
            self.assertLess(time.monotonic(), deadline, "the stalled page was never requested")
            time.sleep(0.05)
        return task

    def cancel_amid_hostiles(self, feed_id, mode, expect):
        task = self.stalled_run(feed_id)
        hostiles = Hostiles(self.stack.port, "/api/threat-feeds/cancel-task/%s/" % task)
        try:
            hostiles.open(HOSTILE)
            time.sleep(1.0)   # let every kind reach the server and settle there
            # Reads a user makes while the hostile connections sit there.
            reads = []
            for _ in range(10):
                status, data, ms = self.api("GET", "/api/health")
                self.assertEqual(status, 200, data)
                status, data, ms2 = self.api("GET", "/api/threat-feeds/task-status/%s/" % task)
                self.assertEqual(status, 200, data)
                self.assertIn(data["status"], ACTIVE, data)
                reads.append(max(ms, ms2))
            status, data, cancel_ms = self.api("POST", "/api/threat-feeds/cancel-task/%s/" % task,
                                               {"mode": mode})
            self.assertEqual(status, 202, data)
            t0 = time.monotonic()
            t = self.stack.wait_task(task, TERMINAL, timeout=120, interval=0.02)
            terminal_ms = (time.monotonic() - t0) * 1000
            self.assertEqual(t["status"], expect, t)
            status, data, _ = self.api("GET", "/api/health")
            self.assertEqual(status, 200, data)
            # The feed can run again at once (no slot held by a hostile client).
            status, data, _ = self.api("POST", "/api/threat-feeds/%s/consume/" % feed_id, {})
            self.assertEqual(status, 202, data)
            again = data["task_id"]
            status, data, _ = self.api("POST", "/api/threat-feeds/cancel-task/%s/" % again,
                                       {"mode": "stop_now"})
            self.assertEqual(status, 202, data)
            self.stack.wait_task(again, TERMINAL, timeout=120, interval=0.05)
            log("%s %s: %d hostile connections (%d still open at the end, %d closed by the "
                "server while dribbling); reads max %.1f ms median %.1f ms; cancel answered in "
                "%.1f ms, terminal %s %.1f ms later"
                % (self.server, mode, hostiles.count(), hostiles.still_open(), hostiles.errors,
                   max(reads), sorted(reads)[len(reads) // 2], cancel_ms, t["status"],
                   terminal_ms))
        finally:
            hostiles.close()
        # The server outlives its hostile clients.
        status, data, _ = self.api("GET", "/api/health")
        self.assertEqual(status, 200, data)

    def test_stop_now_amid_slow_and_half_open_connections(self):
        self.cancel_amid_hostiles("h1", "stop_now", "stopped")

    def test_cancel_job_amid_slow_and_half_open_connections(self):
        self.cancel_amid_hostiles("h2", "cancel_job", "cancelled")

    def test_more_slow_bodies_than_handlers(self):
        """Many more slow bodies at /api/ than handler processes: if the web
        server passed bodies to the handler as they came, every handler would
        sit in a read and this request would time out."""
        socks = []
        try:
            for _ in range(self.fcgi_procs * 20):
                s = socket.create_connection(("127.0.0.1", self.stack.port), timeout=10)
                s.sendall(b"POST /api/threat-feeds/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
                socks.append(s)
            time.sleep(0.5)
            status, data, ms = self.api("GET", "/api/threat-feeds/", timeout=60)
            self.assertEqual(status, 200, data)
            status, data, ms2 = self.api("POST", "/api/threat-feeds/",
                                         self.stack.demo_feed("h3"), timeout=60)
            self.assertEqual(status, 201, data)
            log("%s: %d stalled bodies; list %.1f ms, create %.1f ms"
                % (self.server, len(socks), ms, ms2))
        finally:
            for s in socks:
                s.close()


class HostileNginx(HostileLighttpd):
    """The same through deploy/nginx (one handler process, spawn-fcgi)."""
    server = "nginx"
    fcgi_procs = 1


if __name__ == "__main__":
    unittest.main()
