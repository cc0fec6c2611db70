#!/usr/bin/env python3
"""Self-test of the fault-injecting upstream (tests/upstream/upstream.py).

Starts the server as a subprocess on port 0 and checks the TAXII 2.1 protocol,
paging, every fault, the OTX / VirusTotal / bundle look-alikes and the lifecycle.
Run: python3 tests/upstream/test_upstream.py   (stdlib only, < 30 s)
"""

import base64
import datetime
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "upstream.py")
ACCEPT = "application/taxii+json;version=2.1"
COLL = "91a7b528-80eb-42ed-a74d-c6fbd5a26116"
OBJECTS = "/api1/collections/%s/objects/" % COLL
TAXII = {"Accept": ACCEPT}


def start_server(*extra):
    """(process, port) of a fresh server; the caller stops it."""
    fd, port_file = tempfile.mkstemp(prefix="upstream-port-")
    os.close(fd)
    os.unlink(port_file)
    proc = subprocess.Popen([sys.executable, SERVER, "--port", "0", "--port-file", port_file,
                             "--quiet", "--lifetime-s", "120"] + list(extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline().decode()
    if not line.startswith("listening on http://127.0.0.1:"):
        proc.kill()
        raise RuntimeError("server did not start: %r %r" % (line, proc.stderr.read()))
    port = int(line.rsplit(":", 1)[1])
    with open(port_file) as f:
        assert int(f.read()) == port
    return proc, port, port_file


def stop_server(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.stdout.close()
    proc.stderr.close()


class Client:
    """Tiny HTTP helper bound to one server port."""

    def __init__(self, port):
        self.port = port

    def request(self, method, path, body=None, headers=None, timeout=10):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), resp.read()
        finally:
            conn.close()

    def get(self, path, headers=None, **kw):
        return self.request("GET", path, headers=headers, **kw)

    def taxii(self, path, **kw):
        status, headers, body = self.get(path, TAXII)
        return status, headers, (json.loads(body) if body else None)

    def ctl(self, name, body=None):
        method = "GET" if body is None else "POST"
        status, _, raw = self.request(method, "/_ctl/" + name,
                                      body=None if body is None else json.dumps(body),
                                      headers={"Content-Type": "application/json"})
        assert status == 200, (status, raw)
        return json.loads(raw)

    def faults(self, cfg):
        return self.ctl("faults", cfg)

    def raw(self, path, headers=None):
        """A connected socket after sending a GET (for byte-level timing checks)."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1"]
        lines += ["%s: %s" % kv for kv in (headers or TAXII).items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return sock


def read_head(sock):
    """(status, headers, body bytes already received) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict((k.lower(), v.strip()) for k, _, v in (l.partition(":") for l in lines[1:]))
    return int(lines[0].split()[1]), headers, rest


def read_until_close(sock, body):
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return body
        body += chunk


class UpstreamTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc, cls.port, cls.port_file = start_server("--objects", "250", "--page-size", "40",
                                                         "--max-page-size", "100",
                                                         "--otx-pulses", "12")
        cls.c = Client(cls.port)

    @classmethod
    def tearDownClass(cls):
        stop_server(cls.proc)

    def setUp(self):
        self.c.ctl("reset", {"data": True})

    # --- helpers ------------------------------------------------------

    def page(self, query="", **kw):
        return self.c.taxii(OBJECTS + ("?" + query if query else ""), **kw)

    def walk(self, limit=40, added_after=None):
        """All objects by next-paging; returns (objects, pages)."""
        base = "limit=%d" % limit + ("&added_after=" + added_after if added_after else "")
        objects, pages, query = [], 0, base
        while True:
            status, headers, env = self.page(query)
            self.assertEqual(status, 200)
            pages += 1
            objects += env.get("objects", [])
            if env.get("objects"):
                self.assertEqual(headers["x-taxii-date-added-first"][-1], "Z")
            if not env.get("more"):
                self.assertNotIn("next", env)
                return objects, pages
            query = base + "&next=" + env["next"]

    # --- TAXII protocol -----------------------------------------------

    def test_discovery_to_full_paging(self):
        status, headers, disc = self.c.taxii("/taxii2/")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], ACCEPT)
        root = disc["api_roots"][0]
        self.assertEqual(root, "http://127.0.0.1:%d/api1/" % self.port)
        self.assertEqual(disc["default"], root)
        status, _, info = self.c.taxii("/api1/")
        self.assertIn(ACCEPT, info["versions"])
        self.assertIn("max_content_length", info)
        _, _, colls = self.c.taxii("/api1/collections/")
        readable = [c for c in colls["collections"] if c["can_read"]]
        self.assertEqual([c["id"] for c in readable], [COLL])
        self.assertEqual(readable[0]["title"], "Synthetic indicators")
        status, _, coll = self.c.taxii("/api1/collections/%s/" % COLL)
        self.assertEqual((status, coll["id"]), (200, COLL))

        objects, pages = self.walk(limit=40)
        self.assertEqual(pages, 7)
        ids = [o["id"] for o in objects]
        self.assertEqual(len(ids), 250)
        self.assertEqual(len(set(ids)), 250)
        types = {o["type"] for o in objects}
        self.assertTrue({"indicator", "malware", "relationship", "x-acme-note"} <= types)
        patterns = " ".join(o["pattern"] for o in objects if o["type"] == "indicator")
        for kind in ("ipv4-addr", "ipv6-addr", "domain-name", "url:", "email-addr",
                     "'SHA-256'", "MD5"):
            self.assertIn(kind, patterns)
        created = [o["created"] for o in objects]
        self.assertEqual(created, sorted(created))
        again, _ = self.walk(limit=100)           # deterministic, any page size
        self.assertEqual(again, objects)
        stats = self.c.ctl("stats")
        self.assertEqual(stats["requests"]["discovery"], 1)
        self.assertEqual(stats["requests"]["root"], 1)
        self.assertEqual(stats["requests"]["collections"], 1)
        self.assertEqual(stats["objects_pages"], 10)
        self.assertEqual(stats["objects_served"], 500)
        first = stats["objects_requests"][0]
        self.assertEqual((first["added_after"], first["next"], first["limit"]), (None, None, "40"))
        self.assertGreater(stats["bytes_sent"], 100000)

    def test_limit_default_and_cap(self):
        _, _, env = self.page()
        self.assertEqual(len(env["objects"]), 40)
        _, _, env = self.page("limit=5000")
        self.assertEqual(len(env["objects"]), 100)
        status, _, env = self.page("limit=abc")
        self.assertEqual(status, 400)
        self.assertEqual(env["http_status"], "400")

    def test_added_after_is_strict(self):
        _, headers, env = self.page("limit=10")
        last = headers["x-taxii-date-added-last"]
        self.assertRegex(last, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
        _, headers2, env2 = self.page("limit=10&added_after=" + last)
        self.assertEqual(env2["objects"][0]["id"], self.page("limit=11")[2]["objects"][10]["id"])
        self.assertGreater(headers2["x-taxii-date-added-first"], last)
        # one microsecond earlier includes the object added at `last`
        stamp = datetime.datetime.strptime(last, "%Y-%m-%dT%H:%M:%S.%fZ")
        earlier = (stamp - datetime.timedelta(microseconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        _, _, env3 = self.page("limit=1&added_after=" + earlier)
        self.assertEqual(env3["objects"][0]["id"], env["objects"][-1]["id"])
        objects, _ = self.walk(added_after=last)
        self.assertEqual(len(objects), 240)

    def test_empty_result(self):
        status, headers, body = self.c.get(OBJECTS + "?added_after=2030-01-01T00:00:00.000000Z",
                                           TAXII)
        self.assertEqual((status, body), (200, b"{}"))
        self.assertNotIn("x-taxii-date-added-first", headers)

    def test_next_rules(self):
        _, _, env = self.page("limit=10")
        status, _, _ = self.c.get(OBJECTS + "?next=" + env["next"], TAXII)
        self.assertEqual(status, 500)
        status, _, err = self.page("limit=10&match[type]=malware&next=" + env["next"])
        self.assertEqual(status, 400)
        self.assertIn("title", err)
        status, _, _ = self.page("limit=10&next=garbage")
        self.assertEqual(status, 400)
        status, _, env2 = self.page("limit=20&next=" + env["next"])   # limit may change
        self.assertEqual((status, len(env2["objects"])), (200, 20))

    def test_next_ttl(self):
        self.c.faults({"next_ttl_s": 0.2})
        _, _, env = self.page("limit=10")
        time.sleep(0.3)
        status, _, err = self.page("limit=10&next=" + env["next"])
        self.assertEqual(status, 400)

    def test_match_filters(self):
        _, _, env = self.page("limit=100&match[type]=malware,relationship")
        self.assertEqual({o["type"] for o in env["objects"]}, {"malware", "relationship"})
        self.assertEqual(len(env["objects"]), 50)
        one = env["objects"][3]["id"]
        _, _, env = self.page("match[id]=" + one)
        self.assertEqual([o["id"] for o in env["objects"]], [one])
        status, _, body = self.c.get(OBJECTS + "?match[spec_version]=2.0", TAXII)
        self.assertEqual(body, b"{}")

    def test_errors_accept_slash_unknown(self):
        status, headers, body = self.c.get(OBJECTS)
        self.assertEqual(status, 406)
        self.assertEqual(json.loads(body)["http_status"], "406")
        status, _, _ = self.c.get(OBJECTS, {"Accept": "application/taxii+json"})
        self.assertEqual(status, 406)
        status, _, _ = self.c.get(OBJECTS, {"Accept": "application/taxii+json; version=2.1"})
        self.assertEqual(status, 200)
        status, headers, _ = self.c.get(OBJECTS[:-1] + "?limit=3", TAXII)
        self.assertEqual(status, 308)
        self.assertTrue(headers["location"].endswith(OBJECTS + "?limit=3"))
        status, _, err = self.c.taxii("/api1/collections/nope/objects/")
        self.assertEqual((status, err["http_status"]), (404, "404"))
        status, _, _ = self.c.taxii("/api1/collections/472c94ae-3113-4e3e-a4dd-a9f4ac7471d4"
                                    "/objects/")
        self.assertEqual(status, 403)

    def test_bump_versions(self):
        objects, _ = self.walk()
        _, headers, _ = self.page("limit=100&added_after=" + "2024-01-01T00:03:00.000000Z")
        last = self.c.ctl("stats")["data"]["last_added"]
        data = self.c.ctl("bump_versions", {"count": 5})["data"]
        self.assertEqual(data["entries"], 255)
        _, _, env = self.page("added_after=" + last)
        self.assertEqual([o["id"] for o in env["objects"]], [o["id"] for o in objects[:5]])
        for new, old in zip(env["objects"], objects):
            self.assertGreater(new["modified"], old["modified"])
            self.assertEqual(new["created"], old["created"])
        latest, _ = self.walk()
        self.assertEqual(len(latest), 250)                # match[version]=last (default)
        self.assertEqual([o["id"] for o in latest[-5:]], [o["id"] for o in objects[:5]])
        _, _, env = self.page("limit=100&match[version]=all&added_after=" + last)
        self.assertEqual(len(env["objects"]), 5)
        _, _, env = self.page("limit=100&match[version]=first")
        self.assertEqual(env["objects"][:5], objects[:5])
        self.c.faults({"bump_versions": 2})              # also accepted as a fault key
        self.assertEqual(self.c.ctl("stats")["data"]["entries"], 257)
        self.c.ctl("data", {"objects": 30, "seed": 7})
        objs, _ = self.walk()
        self.assertEqual(len(objs), 30)
        self.assertNotEqual(objs[5]["id"], objects[5]["id"])

    def test_basic_auth(self):
        proc, port, _ = start_server("--username", "alice", "--password", "s3cret",
                                     "--objects", "10")
        try:
            c = Client(port)
            status, headers, body = c.get("/taxii2/", TAXII)
            self.assertEqual(status, 401)
            self.assertEqual(headers["www-authenticate"], 'Basic realm="taxii"')
            self.assertIn(b"<html", body)
            bad = "Basic " + base64.b64encode(b"alice:wrong").decode()
            self.assertEqual(c.get(OBJECTS, dict(TAXII, Authorization=bad))[0], 401)
            good = "Basic " + base64.b64encode(b"alice:s3cret").decode()
            status, _, body = c.get(OBJECTS, dict(TAXII, Authorization=good))
            self.assertEqual((status, len(json.loads(body)["objects"])), (200, 10))
            self.assertEqual(c.ctl("stats")["requests"]["discovery"], 1)   # _ctl: no auth
        finally:
            stop_server(proc)

    # --- faults -------------------------------------------------------

    def test_stall(self):
        self.c.faults({"stall": {"page": 1, "after_bytes": 50, "seconds": 1.5}})
        self.page("limit=5")                              # page 0: normal
        sock = self.c.raw(OBJECTS + "?limit=5")
        try:
            t0 = time.monotonic()
            status, headers, body = read_head(sock)
            while len(body) < 50:
                body += sock.recv(65536)
            self.assertEqual((status, len(body)), (200, 50))
            self.assertLess(time.monotonic() - t0, 0.5)
            sock.settimeout(1.0)
            with self.assertRaises(socket.timeout):       # nothing during the stall
                sock.recv(65536)
            sock.settimeout(5)
            while len(body) < int(headers["content-length"]):
                body += sock.recv(65536)
            self.assertGreater(time.monotonic() - t0, 1.4)
            self.assertEqual(len(json.loads(body)["objects"]), 5)
        finally:
            sock.close()
        # other requests are not blocked by a stalled one
        self.c.faults({"stall": {"page": "all", "after_bytes": 10, "seconds": 30}})
        sock = self.c.raw(OBJECTS)
        try:
            read_head(sock)
            t0 = time.monotonic()
            self.assertEqual(self.c.taxii("/taxii2/")[0], 200)
            self.assertLess(time.monotonic() - t0, 1)
            self.assertEqual(self.c.ctl("stats")["in_flight"], 1)
        finally:
            sock.close()
        deadline = time.monotonic() + 3                   # a hang-up ends the stall
        while self.c.ctl("stats")["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = self.c.ctl("stats")
        self.assertEqual((stats["in_flight"], stats["aborted"]), (0, 1))

    def test_stall_before_headers_and_page_delay(self):
        self.c.faults({"stall": {"after_bytes": -1, "seconds": 0.4}, "page_delay_ms": 200})
        t0 = time.monotonic()
        self.assertEqual(self.page("limit=1")[0], 200)
        self.assertGreater(time.monotonic() - t0, 0.55)
        t0 = time.monotonic()
        self.assertEqual(self.c.taxii("/taxii2/")[0], 200)   # not a data request
        self.assertLess(time.monotonic() - t0, 0.2)

    def test_drip(self):
        self.c.faults({"drip": {"bytes_per_s": 4000}})
        t0 = time.monotonic()
        status, headers, body = self.c.get(OBJECTS + "?limit=5", TAXII)
        took = time.monotonic() - t0
        self.assertEqual(status, 200)
        self.assertEqual(len(json.loads(body)["objects"]), 5)
        self.assertGreater(took, len(body) / 4000 * 0.7)

    def test_truncate(self):
        self.c.faults({"truncate": {"page": 0}})
        sock = self.c.raw(OBJECTS + "?limit=10")
        try:
            status, headers, body = read_head(sock)
            body = read_until_close(sock, body)
        finally:
            sock.close()
        self.assertEqual(status, 200)
        self.assertEqual(len(body), int(headers["content-length"]) // 2)
        self.assertEqual(self.page("limit=10")[0], 200)   # only page 0

    def test_status_codes(self):
        self.c.faults({"status": {"page": 0, "code": 429, "retry_after": 2, "times": 2}})
        status, headers, body = self.c.get(OBJECTS, TAXII)
        self.assertEqual((status, headers["retry-after"]), (429, "2"))
        self.assertEqual(json.loads(body)["http_status"], "429")
        self.assertEqual(self.c.get(OBJECTS, TAXII)[0], 429)
        self.assertEqual(self.c.get(OBJECTS, TAXII)[0], 200)
        self.c.ctl("reset", {})
        self.c.faults({"status": {"page": 1, "code": 401}})
        self.assertEqual(self.c.get(OBJECTS, TAXII)[0], 200)
        status, headers, body = self.c.get(OBJECTS, TAXII)
        self.assertEqual(status, 401)
        self.assertIn("www-authenticate", headers)
        self.assertTrue(headers["content-type"].startswith("text/html"))
        for code in (403, 404, 503):
            self.c.ctl("reset", {})
            self.c.faults({"status": {"page": 0, "code": code}})
            status, headers, body = self.c.get(OBJECTS, TAXII)
            self.assertEqual((status, json.loads(body)["http_status"]), (code, str(code)))
        self.c.ctl("reset", {})
        self.c.faults({"status": {"page": "all", "code": 500}})
        kinds = [self.c.get(OBJECTS, TAXII)[1]["content-type"] for _ in range(4)]
        self.assertEqual(kinds[0], ACCEPT)
        self.assertTrue(kinds[1].startswith("text/html"))
        self.assertEqual(kinds[2], ACCEPT)

    def test_body_faults(self):
        self.c.faults({"bad_json": {"page": 0}, "html": {"page": 1},
                       "invalid_utf8": {"page": 2}, "redirect": {"page": 3},
                       "huge": {"page": 4, "bytes": 300000}, "deep": {"page": 5, "depth": 5000},
                       "many": {"page": 6, "objects": 500}})
        status, _, body = self.c.get(OBJECTS, TAXII)
        self.assertEqual(status, 200)
        self.assertRaises(ValueError, json.loads, body)
        status, headers, body = self.c.get(OBJECTS, TAXII)
        self.assertEqual((status, headers["content-type"][:9]), (200, "text/html"))
        status, _, body = self.c.get(OBJECTS, TAXII)
        self.assertEqual(status, 200)
        self.assertRaises(UnicodeDecodeError, body.decode)
        status, headers, _ = self.c.get(OBJECTS, TAXII)
        self.assertEqual((status, headers["location"]), (302, "ftp://127.0.0.1/x"))
        status, _, body = self.c.get(OBJECTS, TAXII)
        self.assertEqual(len(body), 300000)
        self.assertEqual(len(json.loads(body)["objects"]), 1)
        status, _, body = self.c.get(OBJECTS, TAXII)
        self.assertEqual(body.count(b"["), 5001)
        self.assertRaises(RecursionError, json.loads, body)
        _, _, env = self.page("limit=10")
        self.assertEqual(len(env["objects"]), 500)
        self.assertEqual(len({o["id"] for o in env["objects"]}), 500)
        self.assertEqual(self.page("limit=10")[0], 200)
        stats = self.c.ctl("stats")
        self.assertEqual([r["faults"] for r in stats["objects_requests"][:2]],
                         [["bad_json"], ["html"]])

    def test_chunked_and_huge_chunked(self):
        self.c.faults({"chunked": True, "huge": {"page": 1, "bytes": 100000, "chunked": True}})
        status, headers, body = self.c.get(OBJECTS + "?limit=3", TAXII)
        self.assertEqual(headers.get("transfer-encoding"), "chunked")
        self.assertEqual(len(json.loads(body)["objects"]), 3)
        status, headers, body = self.c.get(OBJECTS, TAXII)
        self.assertNotIn("content-length", headers)
        self.assertEqual(len(body), 100000)

    def test_wrong_types(self):
        self.c.faults({"wrong_types": {"page": 0}})
        _, _, env = self.page()
        self.assertIsInstance(env["objects"][0]["id"], int)
        self.assertIsInstance(env["objects"][0]["type"], list)
        self.c.faults({"wrong_types": {"variant": "envelope"}})
        _, _, env = self.page()
        self.assertIsInstance(env["objects"], dict)

    def test_loop_next(self):
        self.c.faults({"loop_next": True})
        _, _, p0 = self.page("limit=10")
        _, _, p1 = self.page("limit=10&next=" + p0["next"])
        _, _, p2 = self.page("limit=10&next=" + p1["next"])
        _, _, p3 = self.page("limit=10&next=" + p2["next"])
        self.assertTrue(p1["more"])
        self.assertEqual(p2["objects"], p0["objects"])
        self.assertEqual(p3["objects"], p1["objects"])
        self.assertEqual(p3["next"], p1["next"])

    def test_endless_more(self):
        self.c.faults({"endless_more": True})
        _, headers, env = self.page("limit=10")
        seen = set()
        for _ in range(5):
            self.assertEqual((env["more"], env["objects"]), (True, []))
            self.assertNotIn(env["next"], seen)
            seen.add(env["next"])
            self.assertNotIn("x-taxii-date-added-first", headers)
            _, headers, env = self.page("limit=10&next=" + env["next"])

    def test_no_next_and_runtime_page_cap(self):
        self.c.faults({"no_next": True, "max_page_size": 7})
        status, headers, env = self.page("limit=50")
        self.assertEqual((env["more"], len(env["objects"])), (True, 7))
        self.assertNotIn("next", env)
        _, _, env2 = self.page("limit=50&added_after=" + headers["x-taxii-date-added-last"])
        self.c.faults({})
        self.assertEqual(env2["objects"][0]["id"], self.page("limit=8")[2]["objects"][7]["id"])

    def test_bad_fault_config(self):
        status, _, body = self.c.request("POST", "/_ctl/faults", body=json.dumps({"stal": {}}))
        self.assertEqual(status, 400)
        self.assertIn(b"stall", body)

    # --- OTX, VirusTotal, bundles --------------------------------------

    def test_otx(self):
        path = "/api/v1/pulses/subscribed?limit=5"
        status, _, body = self.c.get(path)
        self.assertEqual((status, json.loads(body)), (403, {"detail": "Authentication required"}))
        self.assertEqual(self.c.get(path, {"X-OTX-API-KEY": "bad"})[0], 403)
        key = {"X-OTX-API-KEY": "k"}
        pulses, url, pages = [], path, 0
        while url:
            status, _, body = self.c.get(url, key)
            self.assertEqual(status, 200)
            doc = json.loads(body)
            self.assertEqual(doc["count"], 12)
            pulses += doc["results"]
            pages += 1
            url = doc["next"] and doc["next"].split(str(self.port), 1)[1]
        self.assertEqual((pages, len(pulses)), (3, 12))
        modified = [p["modified"] for p in pulses]
        self.assertEqual(modified, sorted(modified))
        self.assertRegex(modified[0], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")
        p = pulses[0]
        self.assertEqual((len(p["id"]), p["tlp"], len(p["indicators"])), (24, "white", 5))
        types = {i["type"] for q in pulses for i in q["indicators"]}
        self.assertTrue({"IPv4", "domain", "hostname", "URL", "FileHash-SHA256", "CVE"} <= types)
        ind = p["indicators"][0]
        self.assertIsInstance(ind["id"], int)
        self.assertEqual((ind["expiration"], ind["is_active"]), (None, 1))
        status, _, body = self.c.get(
            "/api/v1/pulses/subscribed?limit=50&modified_since=" + modified[8], key)
        self.assertEqual([x["id"] for x in json.loads(body)["results"]],
                         [x["id"] for x in pulses[9:]])
        status, _, body = self.c.get("/api/v1/pulses/%s/indicators?limit=2&page=3" % p["id"], key)
        self.assertEqual(json.loads(body)["results"], p["indicators"][4:])
        self.c.ctl("reset", {})
        self.c.faults({"status": {"page": 0, "code": 503, "retry_after": 1}})
        status, headers, _ = self.c.get(path, key)
        self.assertEqual((status, headers["retry-after"]), (503, "1"))
        self.assertEqual(self.c.ctl("stats")["otx_requests"][0]["status"], 503)

    def test_virustotal(self):
        key = {"x-apikey": "k"}
        status, _, body = self.c.get("/api/v3/domains/haiku-os.org", key)
        self.assertEqual((status, json.loads(body)["data"]["id"]), (200, "haiku-os.org"))
        sha = "fff40032c3dc062147c530e3a0a5c7e6acda4d1f1369fbc994cddd3c19a2de88"
        status, _, body = self.c.get("/api/v3/files/" + sha, key)
        self.assertEqual(json.loads(body)["data"]["id"], sha)
        other = "ab" * 32
        status, _, body = self.c.get("/api/v3/files/" + other, key)
        data = json.loads(body)["data"]
        self.assertEqual((status, data["type"], data["id"]), (200, "file", other))
        for k in ("harmless", "malicious", "suspicious", "undetected", "timeout"):
            self.assertIsInstance(data["attributes"]["last_analysis_stats"][k], int)
        self.assertEqual(self.c.get("/api/v3/files/" + other, key)[2], body)  # deterministic
        analysis = "ZWY0Y2M1NWMzOTkwY2E2MmJmMDUyM2NlMTA1ZGU3NTA6MTcwMjIzNTY5MA=="
        status, _, body = self.c.get("/api/v3/analyses/" + analysis, key)
        self.assertEqual((status, json.loads(body)["data"]["id"]), (200, analysis))
        status, _, body = self.c.get("/api/v3/files/fffdddd2c3dc06d147c5ddddddd5c7e6acda4d1f1369"
                                     "fbc994cddd3c19a2de88", key)
        self.assertEqual((status, json.loads(body)["error"]["code"]), (404, "NotFoundError"))
        status, _, body = self.c.get("/api/v3/ip_addresses/192.0.2.7", key)
        self.assertEqual(json.loads(body)["data"]["type"], "ip_address")
        status, _, body = self.c.get("/api/v3/files/0000" + "a" * 60, key)
        self.assertEqual((status, json.loads(body)["error"]["code"]), (404, "NotFoundError"))
        status, _, body = self.c.get("/api/v3/files/" + sha, {"x-apikey": "bad"})
        self.assertEqual((status, json.loads(body)["error"]["code"]),
                         (401, "WrongCredentialsError"))
        self.c.faults({"vt_rpm": 2})
        self.assertEqual(self.c.get("/api/v3/domains/a.example", key)[0], 200)
        self.assertEqual(self.c.get("/api/v3/domains/b.example", key)[0], 200)
        status, headers, body = self.c.get("/api/v3/domains/c.example", key)
        self.assertEqual((status, json.loads(body)["error"]["code"]), (429, "QuotaExceededError"))
        self.assertGreaterEqual(int(headers["retry-after"]), 1)

    def test_bundles(self):
        status, headers, body = self.c.get("/bundles/poisonivy.json")
        self.assertEqual((status, headers["content-type"]), (200, "application/json"))
        self.assertEqual(len(json.loads(body)["objects"]), 155)
        status, _, body = self.c.get("/bundles/generated.json")
        doc = json.loads(body)
        self.assertEqual((doc["type"], len(doc["objects"])), ("bundle", 250))
        self.assertEqual(self.c.get("/bundles/..%2Fx.json")[0], 404)
        self.assertEqual(self.c.get("/bundles/missing.json")[0], 404)


class RealServerModesTest(unittest.TestCase):
    """--api-roots and --session-next: what real TAXII servers do that the
    default mode does not."""

    def test_api_roots_multi_and_missing(self):
        for mode, has in (("multi", True), ("missing", False)):
            proc, port, _ = start_server("--api-roots", mode)
            try:
                c = Client(port)
                status, _, doc = c.taxii("/taxii2/")
                self.assertEqual(status, 200)
                self.assertTrue(doc["default"].endswith("/api0/"))
                self.assertEqual(any(r.endswith("/api1/") for r in doc["api_roots"]), has)
                self.assertIn("http://127.0.0.1:9/dead/", doc["api_roots"])
                self.assertEqual(c.taxii("/api403/collections/")[0], 403)
                self.assertEqual(c.taxii("/api404/collections/")[0], 404)
                status, _, cols = c.taxii("/api0/collections/")
                self.assertEqual(status, 200)
                self.assertNotIn(COLL, [x["id"] for x in cols["collections"]])
            finally:
                stop_server(proc)

    def test_session_next_repeats_one_token_and_pages_forward(self):
        proc, port, _ = start_server("--session-next", "--objects", "250", "--page-size", "100")
        try:
            c = Client(port)
            base = "/api1/collections/%s/objects/?limit=100" % COLL
            status, _, page = c.taxii(base)
            self.assertEqual(status, 200)
            token, ids = page["next"], [o["id"] for o in page["objects"]]
            while page.get("more"):
                status, _, page = c.taxii(base + "&next=" + token)
                self.assertEqual(status, 200)
                if page.get("more"):
                    self.assertEqual(page["next"], token)   # the same token each time
                ids += [o["id"] for o in page["objects"]]
            self.assertEqual(len(ids), 250)
            self.assertEqual(len(set(ids)), 250)
            self.assertEqual(c.taxii(base + "&next=unknown")[0], 400)
        finally:
            stop_server(proc)


class LifecycleTest(unittest.TestCase):
    def test_sigterm_lifetime_and_parent_death(self):
        proc, port, port_file = start_server()
        proc.terminate()
        self.assertEqual(proc.wait(5), 0)
        self.assertFalse(os.path.exists(port_file))
        stop_server(proc)

        proc, port, _ = start_server("--lifetime-s", "0.5")
        self.assertEqual(proc.wait(5), 0)
        stop_server(proc)

        # The server's parent is a shell that exits after 1.5 s: the server follows.
        with tempfile.TemporaryDirectory() as tmp:
            port_file = os.path.join(tmp, "port")
            shell = subprocess.Popen(["sh", "-c", '"$0" "$1" --port 0 --quiet --port-file "$2" '
                                      '--lifetime-s 20 >/dev/null 2>&1 & sleep 1.5',
                                      sys.executable, SERVER, port_file])
            port = None
            deadline = time.monotonic() + 5
            while port is None and time.monotonic() < deadline:
                if os.path.exists(port_file):
                    with open(port_file) as f:
                        port = int(f.read() or 0) or None
                time.sleep(0.02)
            self.assertIsNotNone(port)
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            self.assertIsNone(shell.poll())       # the parent is still alive here
            shell.wait(5)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                except OSError:
                    break
                time.sleep(0.1)
            else:
                self.fail("the server outlived its parent")
            self.assertFalse(os.path.exists(port_file))


if __name__ == "__main__":
    unittest.main(verbosity=2)
