"""Enterprise networks (README "Proxies, private CAs and client certificates";
issue 15 §4) through the real stack: a tinyproxy the test starts on loopback
(with Basic proxy auth), TAXII upstreams served over HTTPS with a CA the test
makes (openssl), one of them demanding a client certificate. Checks that runs
and test_connection go through the proxy, that a wrong or absent CA fails the
run (no fallback to unverified TLS), mutual TLS with and without the client
certificate, that the proxy password and the client key never come back from
the API nor reach the audit, and that a cancel during a stalled transfer
through the proxy still ends the run promptly.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

from stack import REPO, UPSTREAM, TERMINAL
from test_api import ApiCase

PROXY_USER = "proxy-user"
PROXY_PASS = "pr0xy-pa55-for-netw"
FEED_PROXY_PASS = "feed-pr0xy-pa55-for-netw"


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", name + ".key", "-out", name + ".pem", "-days", "2",
            "-subj", "/CN=threatfeed test " + name,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def make_leaf(d, name, ca, usage):
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name,
            cwd=d)
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "extendedKeyUsage=%s\n" % usage)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
            "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", name + ".ext",
            cwd=d)


def read(d, name):
    with open(os.path.join(d, name)) as f:
        return f.read()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_file(path, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("%s never appeared (exit %s)" % (path, proc.poll()))
        time.sleep(0.05)
    with open(path) as f:
        return f.read().strip()


def missing():
    for tool in ("tinyproxy", "openssl"):
        if not shutil.which(tool):
            return tool + " is not installed (scripts/deps.sh test)"
    return None


class Network:
    """The certificates, the proxy and the TLS upstreams of one test class."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="tf-netw-")
        self.procs = []
        d = self.tmp
        make_ca(d, "ca")
        make_ca(d, "other")
        make_leaf(d, "server", "ca", "serverAuth")
        make_leaf(d, "client", "ca", "clientAuth")
        self.ca, self.other_ca = read(d, "ca.pem"), read(d, "other.pem")
        self.client_cert, self.client_key = read(d, "client.pem"), read(d, "client.key")
        self.proxy_log = os.path.join(d, "tinyproxy.log")
        self.proxy_port = self._start_proxy()
        self.tls_port = self._start_upstream("tls", [])
        self.mtls_port = self._start_upstream("mtls", ["--tls-client-ca", os.path.join(d, "ca.pem")])

    def _start_proxy(self):
        for _ in range(5):
            port = free_port()
            conf = os.path.join(self.tmp, "tinyproxy.conf")
            with open(conf, "w") as f:
                f.write('Port %d\nListen 127.0.0.1\nTimeout 600\nLogFile "%s"\nLogLevel Info\n'
                        'MaxClients 50\nAllow 127.0.0.1\nBasicAuth %s %s\n'
                        % (port, self.proxy_log, PROXY_USER, PROXY_PASS))
            proc = subprocess.Popen(["tinyproxy", "-d", "-c", conf], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            self.procs.append(proc)
            deadline = time.monotonic() + 10
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    return port
                except OSError:
                    time.sleep(0.05)
        raise AssertionError("tinyproxy did not start")

    def _start_upstream(self, name, extra):
        port_file = os.path.join(self.tmp, name + ".port")
        proc = subprocess.Popen(
            [sys.executable, UPSTREAM, "--port", "0", "--port-file", port_file, "--quiet",
             "--objects", "300", "--page-size", "100", "--lifetime-s", "1800",
             "--tls-cert", os.path.join(self.tmp, "server.pem"),
             "--tls-key", os.path.join(self.tmp, "server.key")] + extra,
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return int(wait_file(port_file, proc))

    def proxy_lines(self):
        try:
            with open(self.proxy_log, errors="replace") as f:
                return f.read().splitlines()
        except OSError:
            return []

    def close(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


class NetwCase(ApiCase):
    """One stack whose config names the proxy (with its password) for every
    feed; feeds say otherwise with their own fields."""

    @classmethod
    def setUpClass(cls):
        why = missing()
        if why:
            raise unittest.SkipTest(why)
        cls.net = Network()
        cls.conf = {"proxy": "http://%s:%s@127.0.0.1:%d" % (PROXY_USER, PROXY_PASS,
                                                             cls.net.proxy_port),
                    "no_proxy": ""}
        try:
            super().setUpClass()
        except BaseException:
            cls.net.close()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.net.close()
            # the proxy is ours to stop: it must be gone
            for proc in cls.net.procs:
                assert proc.poll() is not None, "a test process was left running"

    def tls_url(self, port):
        return "https://127.0.0.1:%d/taxii2/" % port

    def run_feed(self, feed_id, timeout=90, **fields):
        self.new_feed(feed_id, **fields)
        task = self.wait(self.consume(feed_id), timeout=timeout)
        return task

    def tunnels_to(self, port):
        return [l for l in self.net.proxy_lines() if "CONNECT 127.0.0.1:%d " % port in l]

    def probe(self, feed_id):
        _, data = self.expect(200, "POST", "/api/threat-feeds/%s/test_connection/" % feed_id, {})
        return data

    def assert_no_secret_in_logs(self):
        """Every file the stack wrote but the store and the config file (which
        hold them by design): the logs of the handler, the web server and the
        runs."""
        db = os.path.abspath(self.stack.db_dir) if not self.stack.db_dir.startswith("postgresql:") \
            else None
        scanned = 0
        for root, _, files in os.walk(self.stack.state_dir):
            for name in files:
                path = os.path.abspath(os.path.join(root, name))
                if path == os.path.abspath(self.stack.conf_path) or (db and path.startswith(db)) \
                        or not os.path.isfile(path):
                    continue
                with open(path, "rb") as f:
                    data = f.read()
                scanned += 1
                for secret in (PROXY_PASS, FEED_PROXY_PASS, self.net.client_key.strip()):
                    self.assertNotIn(secret.encode(), data, path)
        self.assertGreater(scanned, 0, "no log was scanned")

    def assert_no_secrets(self, *texts):
        for text in texts:
            s = text if isinstance(text, str) else json.dumps(text)
            for secret in (PROXY_PASS, FEED_PROXY_PASS, self.net.client_key.strip(),
                           "PRIVATE KEY"):
                self.assertNotIn(secret, s)


class ProxyAndCa(NetwCase):

    def test_run_through_the_global_proxy_with_a_private_ca(self):
        before = len(self.tunnels_to(self.net.tls_port))
        task = self.run_feed("p-ca", url=self.tls_url(self.net.tls_port), ca_pem=self.net.ca)
        self.assertEqual(task["status"], "completed", task)
        self.assertEqual(task["progress"]["indicators_created"] > 0, True, task)
        # every request went through the proxy's tunnel, and the proxy saw them
        self.assertGreater(len(self.tunnels_to(self.net.tls_port)), before)
        got = self.probe("p-ca")
        self.assertTrue(got["ok"], got)
        _, feed = self.expect(200, "GET", "/api/threat-feeds/p-ca/")
        self.assertEqual(feed["ca_pem"], self.net.ca)
        self.assertIsNone(feed["proxy"])
        self.assert_no_secrets(feed)

    def test_absent_or_wrong_ca_fails_without_fallback(self):
        for feed_id, fields in (("no-ca", {}), ("wrong-ca", {"ca_pem": self.net.other_ca})):
            with self.subTest(feed=feed_id):
                task = self.run_feed(feed_id, url=self.tls_url(self.net.tls_port), **fields)
                self.assertEqual(task["status"], "failed", task)
                self.assertIn("certificate", task["error"], task)
                self.assertEqual(task["progress"]["indicators_created"], 0, task)
                got = self.probe(feed_id)
                self.assertFalse(got["ok"], got)
                self.assertIn("certificate", got["detail"], got)

    def test_feed_proxy_overrides_and_empty_goes_direct(self):
        # "" : no proxy for this feed although the config names one
        before = len(self.tunnels_to(self.net.tls_port))
        task = self.run_feed("direct", url=self.tls_url(self.net.tls_port), ca_pem=self.net.ca,
                             proxy="")
        self.assertEqual(task["status"], "completed", task)
        self.assertEqual(len(self.tunnels_to(self.net.tls_port)), before)
        # its own proxy without credentials: the proxy refuses it (407)
        task = self.run_feed("own-noauth", url=self.tls_url(self.net.tls_port),
                             ca_pem=self.net.ca, proxy="http://127.0.0.1:%d" % self.net.proxy_port)
        self.assertEqual(task["status"], "failed", task)
        self.assertIn("proxy", task["error"], task)
        self.assertIn("407", task["error"], task)
        # its own proxy with its own credentials (wrong ones, then right ones)
        fields = dict(url=self.tls_url(self.net.tls_port), ca_pem=self.net.ca,
                      proxy="http://127.0.0.1:%d" % self.net.proxy_port,
                      proxy_username=PROXY_USER, proxy_secret=FEED_PROXY_PASS)
        task = self.run_feed("own-auth", **fields)
        self.assertEqual(task["status"], "failed", task)
        self.assertIn("proxy", task["error"], task)
        _, feed = self.expect(200, "PATCH", "/api/threat-feeds/own-auth/",
                              {"proxy_secret": PROXY_PASS})
        self.assertTrue(feed["has_proxy_secret"])
        self.assertEqual(feed["proxy_username"], PROXY_USER)
        task = self.wait(self.consume("own-auth"))
        self.assertEqual(task["status"], "completed", task)
        # a PATCH that leaves the secret out keeps it
        _, feed = self.expect(200, "PATCH", "/api/threat-feeds/own-auth/", {"name": "renamed"})
        self.assertTrue(feed["has_proxy_secret"])
        self.assert_no_secrets(feed, self.task(task["task_id"]))
        # null clears it (and the username with the proxy stays valid)
        _, feed = self.expect(200, "PATCH", "/api/threat-feeds/own-auth/",
                              {"proxy_secret": None, "proxy_username": None})
        self.assertFalse(feed["has_proxy_secret"])
        _, feeds = self.expect(200, "GET", "/api/threat-feeds/")
        _, audit = self.expect(200, "GET", "/api/audit/?limit=1000")
        self.assertTrue(any(e.get("feed_id") == "own-auth" for e in audit["entries"]), audit)
        self.assert_no_secrets(feeds, audit)
        self.assert_no_secret_in_logs()

    def test_cancel_during_a_stalled_transfer_through_the_proxy(self):
        # the stack's plain upstream, reached through the global proxy
        self.stack.upstream_ctl("faults", {"stall": {"page": 1, "after_bytes": 200,
                                                     "seconds": 300}})
        self.addCleanup(self.stack.upstream_ctl, "reset", {})
        self.new_feed("stall")
        task_id = self.consume("stall")
        deadline = time.monotonic() + 60
        while self.stack.upstream_ctl("stats", method="GET")["in_flight"] < 1:
            self.assertLess(time.monotonic(), deadline, "the stalled page was never requested")
            time.sleep(0.05)
        port = self.stack.upstream_port
        self.assertTrue(any("127.0.0.1:%d" % port in l for l in self.net.proxy_lines()),
                        "the request did not go through the proxy")
        started = time.monotonic()
        self.expect(202, "POST", "/api/threat-feeds/cancel-task/%s/" % task_id,
                    {"mode": "stop_now"})
        task = self.wait(task_id, timeout=60)
        took = time.monotonic() - started
        self.assertEqual(task["status"], "stopped", task)
        self.assertFalse(task["cancel"]["forced"], task)
        # the stall lasts 300 s: ending far inside it proves the transfer through
        # the proxy was interrupted (not a timing figure: just not the stall)
        self.assertLess(took, 60)


class MutualTls(NetwCase):

    def test_client_certificate_required(self):
        url = self.tls_url(self.net.mtls_port)
        task = self.run_feed("m-none", url=url, ca_pem=self.net.ca)
        self.assertEqual(task["status"], "failed", task)
        self.assertIn("client certificate", task["error"], task)
        got = self.probe("m-none")
        self.assertFalse(got["ok"], got)

        task = self.run_feed("m-cert", url=url, ca_pem=self.net.ca,
                             client_cert_pem=self.net.client_cert,
                             client_key_pem=self.net.client_key)
        self.assertEqual(task["status"], "completed", task)
        self.assertGreater(task["progress"]["indicators_created"], 0, task)
        got = self.probe("m-cert")
        self.assertTrue(got["ok"], got)

        _, feed = self.expect(200, "GET", "/api/threat-feeds/m-cert/")
        self.assertTrue(feed["has_client_key"])
        self.assertEqual(feed["client_cert_pem"], self.net.client_cert)
        self.assertNotIn("client_key_pem", feed)
        _, feeds = self.expect(200, "GET", "/api/threat-feeds/")
        _, audit = self.expect(200, "GET", "/api/audit/?limit=1000")
        self.assertTrue(any(e.get("feed_id") == "m-cert" for e in audit["entries"]), audit)
        self.assert_no_secrets(feed, feeds, audit, task)
        self.assert_no_secret_in_logs()
        # the key stays when a PATCH leaves it out: the feed still runs
        self.expect(200, "PATCH", "/api/threat-feeds/m-cert/", {"name": "still mtls"})
        task = self.wait(self.consume("m-cert"))
        self.assertEqual(task["status"], "completed", task)


class Validation(NetwCase):

    def bad(self, field, **fields):
        _, data = self.expect(400, "POST", "/api/threat-feeds/",
                              self.stack.demo_feed("bad-net", **fields), code="invalid_field")
        self.assertTrue(data["error"].startswith(field + ":"), data)
        self.assertNotIn(PROXY_PASS, data["error"])
        return data["error"]

    def test_bad_network_fields_are_refused(self):
        ca, key = self.net.ca, self.net.client_key
        self.bad("proxy", proxy="ftp://127.0.0.1:3128")
        self.bad("proxy", proxy="127.0.0.1:3128")
        self.bad("proxy", proxy="http://u:%s@127.0.0.1:3128" % PROXY_PASS)
        self.bad("proxy", proxy="http://127.0.0.1:3128/path")
        self.bad("proxy", proxy=7)
        self.bad("no_proxy", no_proxy="a;b")
        self.bad("proxy_username", proxy_username="u", proxy_secret="p")
        self.bad("proxy_username", proxy="http://127.0.0.1:1", proxy_secret="p")
        self.bad("ca_pem", ca_pem="not a certificate")
        self.bad("ca_pem", ca_pem=ca.replace("\n", "\n!", 2))
        self.bad("ca_pem", ca_pem=ca + key)                     # a key in a readable field
        self.bad("ca_pem", ca_pem=ca * (32 * 1024 // len(ca) + 1))  # over TF_MAX_CA_PEM
        self.bad("client_cert_pem", client_cert_pem=key, client_key_pem=key)
        self.bad("client_key_pem", client_cert_pem=self.net.client_cert)
        self.bad("client_cert_pem", client_key_pem=key)
        self.bad("client_key_pem", client_cert_pem=self.net.client_cert, client_key_pem=ca)
        self.bad("client_key_pem", client_cert_pem=self.net.client_cert,
                 client_key_pem="-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n"
                                "-----END ENCRYPTED PRIVATE KEY-----\n")
        self.expect(404, "GET", "/api/threat-feeds/bad-net/")


if __name__ == "__main__":
    unittest.main()
