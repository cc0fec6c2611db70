"""Lookup by observable value, browsing, bulk lookup and exports
(docs/SPEC.md §8; README "Indicators and exports") through a real lighttpd
(deploy/lighttpd/threatfeed.conf), the handler and real runs of stix_bundle
feeds whose bundles this test writes: two feeds sharing a value, expired and
revoked indicators, a network.
"""
import json
import os
import shutil
import tempfile
import time
import unittest
import urllib.parse

from test_api import ApiCase, JSON, TokenStack

PAST = "2020-01-01T00:00:00.000Z"
FUTURE = "2999-01-01T00:00:00.000Z"
EXPORT_TOKEN = "exp0rt-t0ken"
API_TOKEN = "api-t0ken"


def indicator(n, pattern, **extra):
    obj = {"type": "indicator", "spec_version": "2.1",
           "id": "indicator--00000000-0000-4000-8000-%012d" % n,
           "created": "2024-01-01T00:00:00.000Z", "modified": "2024-01-01T00:00:00.000Z",
           "pattern_type": "stix", "pattern": pattern, "valid_from": "2024-01-01T00:00:00.000Z"}
    obj.update(extra)
    return obj


def bundle(objects):
    return {"type": "bundle", "id": "bundle--00000000-0000-4000-8000-000000000001",
            "objects": objects}


FEED_A = [
    indicator(1, "[ipv4-addr:value = '198.51.100.7']"),
    indicator(2, "[domain-name:value = 'Evil.Example.']"),
    indicator(3, "[url:value = 'http://evil.example/a,b']"),
    indicator(4, "[file:hashes.'SHA-256' = '%s']" % ("AB" * 32)),
    indicator(5, "[url:value = 'http://expired.example/']", valid_until=PAST),
    indicator(6, "[domain-name:value = 'revoked.example']", revoked=True),
    indicator(7, "[ipv4-addr:value = '203.0.113.0/24']"),
    indicator(8, "[domain-name:value = 'later.example']", valid_until=FUTURE),
]
FEED_B = [
    indicator(101, "[domain-name:value = 'evil.example']"),
    indicator(102, "[ipv4-addr:value = '198.51.100.8']"),
    indicator(103, "[domain-name:value = 'revoked.example']"),
]


class IndicatorStack(TokenStack):
    """A stack whose upstream serves this test's bundles, with an API token and
    an export token."""

    def __init__(self, server, **kw):
        self.bundles = tempfile.mkdtemp(prefix="tf-bundles-")
        kw["upstream_args"] = list(kw.get("upstream_args") or ()) + ["--bundle-dir", self.bundles]
        super().__init__(server, **kw)

    def stop(self, keep=None):
        try:
            super().stop(keep)
        finally:
            shutil.rmtree(self.bundles, ignore_errors=True)

    def write_bundle(self, name, objects):
        path = os.path.join(self.bundles, name + ".json")
        with open(path + ".tmp", "w") as f:
            json.dump(bundle(objects), f)
        os.rename(path + ".tmp", path)

    def bundle_url(self, name):
        return "http://127.0.0.1:%d/bundles/%s.json" % (self.upstream_port, name)


class Indicators(ApiCase):
    conf = {"api_token": API_TOKEN, "export_token": EXPORT_TOKEN}
    auth = {"Authorization": "Bearer " + API_TOKEN}
    stack_class = IndicatorStack
    upstream_args = []

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = cls.stack
        s.write_bundle("a", FEED_A)
        s.write_bundle("b", FEED_B)
        hdrs = dict(cls.auth, **JSON)
        for fid in ("fa", "fb"):
            status, _, data = s.request("POST", "/api/threat-feeds/", {
                "id": fid, "name": "Feed " + fid, "type": "stix_bundle",
                "url": s.bundle_url(fid[1])}, headers=hdrs)
            assert status == 201, data
            status, _, data = s.request("POST", "/api/threat-feeds/%s/consume/" % fid, {},
                                        headers=hdrs)
            assert status == 202, data
            task = s.wait_task(data["task_id"], headers=cls.auth)
            assert task["status"] == "completed", task

    def run_feed(self, fid):
        task = self.wait(self.consume(fid))
        self.assertEqual(task["status"], "completed", task)
        return task

    def get_text(self, path, headers=None, auth=True):
        status, h, body = self.req("GET", path, headers=headers, auth=auth)
        return status, h, body

    # -- lookup --------------------------------------------------------------
    def test_lookup_one_value_two_feeds(self):
        _, data = self.expect(200, "GET", "/api/indicators/?value=EVIL.example.")
        self.assertEqual(data["value"], "EVIL.example.")
        hits = [h for h in data["hits"] if h["type"] == "domain-name"]
        self.assertEqual(len(hits), 1, data)
        hit = hits[0]
        self.assertEqual(hit["value"], "evil.example")
        self.assertEqual(hit["match"], "exact")
        self.assertEqual(sorted(f["feed_id"] for f in hit["feeds"]), ["fa", "fb"])
        for f in hit["feeds"]:
            self.assertTrue(f["record_id"].startswith("indicator--"), f)
            self.assertRegex(f["first_seen"], r"^\d{4}-\d\d-\d\dT")
            self.assertRegex(f["last_seen"], r"^\d{4}-\d\d-\d\dT")
            self.assertRegex(f["task_id"], r"^[0-9a-f-]{36}$")
            self.assertFalse(f["expired"])
            self.assertNotIn("object", f)
        # the STIX object on request
        _, data = self.expect(200, "GET", "/api/indicators/?value=198.51.100.7&include_object=1")
        (hit,) = data["hits"]
        self.assertEqual(hit["feeds"][0]["object"]["pattern"], "[ipv4-addr:value = '198.51.100.7']")
        # canonical forms: a hash in upper case, a network holding an address
        _, data = self.expect(200, "GET", "/api/indicators/?value=" + "ab" * 32)
        self.assertEqual([h["type"] for h in data["hits"]], ["file:hashes.SHA-256"])
        _, data = self.expect(200, "GET", "/api/indicators/?value=203.0.113.77")
        (hit,) = data["hits"]
        self.assertEqual((hit["value"], hit["match"]), ("203.0.113.0/24", "network"))
        _, data = self.expect(200, "GET", "/api/indicators/?value=192.0.2.1")
        self.assertEqual(data["hits"], [])

    def test_lookup_expired_and_revoked(self):
        _, data = self.expect(200, "GET", "/api/indicators/?value=http://expired.example/")
        self.assertEqual(data["hits"], [])
        _, data = self.expect(200, "GET",
                              "/api/indicators/?value=http://expired.example/&include_expired=1")
        (hit,) = data["hits"]
        self.assertTrue(hit["expired"])
        self.assertEqual(hit["feeds"][0]["valid_until"], "2020-01-01T00:00:00.000000Z")
        # revoked in fa, live in fb: one hit, fb only (both with include_expired)
        _, data = self.expect(200, "GET", "/api/indicators/?value=revoked.example")
        (hit,) = [h for h in data["hits"] if h["type"] == "domain-name"]
        self.assertEqual([f["feed_id"] for f in hit["feeds"]], ["fb"])
        _, data = self.expect(200, "GET", "/api/indicators/?value=revoked.example&include_expired=1")
        (hit,) = [h for h in data["hits"] if h["type"] == "domain-name"]
        self.assertEqual([(f["feed_id"], f["revoked"]) for f in hit["feeds"]],
                         [("fa", True), ("fb", False)])
        # a future valid_until is live
        _, data = self.expect(200, "GET", "/api/indicators/?value=later.example")
        self.assertEqual(len([h for h in data["hits"] if h["type"] == "domain-name"]), 1)

    def test_browse_with_cursor(self):
        seen, cursor, pages = [], None, 0
        while True:
            path = "/api/indicators/?limit=2" + ("&cursor=" + cursor if cursor else "")
            _, data = self.expect(200, "GET", path)
            self.assertLessEqual(len(data["indicators"]), 2)
            seen += [(h["type"], h["value"]) for h in data["indicators"]]
            pages += 1
            cursor = data["next_cursor"]
            if not cursor:
                break
        self.assertGreater(pages, 2)
        self.assertEqual(len(seen), len(set(seen)))
        _, whole = self.expect(200, "GET", "/api/indicators/?limit=1000")
        self.assertEqual(seen, [(h["type"], h["value"]) for h in whole["indicators"]])
        self.assertIn(("domain-name", "evil.example"), seen)
        self.assertNotIn(("url", "http://expired.example/"), seen)
        # filters: type and feed
        _, data = self.expect(200, "GET", "/api/indicators/?type=ip&feed_id=fb")
        self.assertEqual([h["value"] for h in data["indicators"]], ["198.51.100.8"])
        self.expect(404, "GET", "/api/indicators/?feed_id=nope", code="not_found")
        self.expect(400, "GET", "/api/indicators/?type=bogus", code="invalid_parameter")
        self.expect(400, "GET", "/api/indicators/?cursor=zz", code="invalid_parameter")
        self.expect(400, "GET", "/api/indicators/?limit=0", code="invalid_parameter")

    # -- threatfeed index rebuild ----------------------------------------------
    def test_index_rebuild_cli(self):
        # On an index that is complete (every record came through a run) the
        # rebuild reads every record and changes nothing: same export, same
        # ETag. Records stored before the index existed are covered by
        # tests/unit/test_index.c (test_rebuild), which can make them.
        path = "/api/export?format=csv&include_expired=1"
        status, h0, before = self.get_text(path)
        self.assertEqual(status, 200)
        _, count = self.expect(200, "GET", "/api/threat-feeds/fa/")
        r = self.stack.cli("index", "rebuild", "fa")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual((out["feeds"], out["entries_added"], out["feeds_busy"]), (1, 0, 0), out)
        self.assertEqual(out["records"], count["indicator_count"], (out, count))
        r = self.stack.cli("index", "rebuild")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertGreaterEqual(out["feeds"], 2)
        self.assertEqual(out["entries_added"], 0, out)
        status, h1, after = self.get_text(path)
        self.assertEqual((status, after, h1["ETag"]), (200, before, h0["ETag"]))
        # an unknown feed (exit 3) and a malformed id (usage, exit 2)
        r = self.stack.cli("index", "rebuild", "nope")
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("nope", r.stderr)
        r = self.stack.cli("index", "rebuild", "Not An Id")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("usage: threatfeed index rebuild [FEED]", r.stderr)

    def test_bulk_lookup(self):
        values = ["198.51.100.7", "evil.example", "192.0.2.1", "http://expired.example/"]
        _, data = self.expect(200, "POST", "/api/indicators/lookup", {"values": values}, JSON)
        self.assertEqual([r["value"] for r in data["results"]], values)
        counts = [len(r["hits"]) for r in data["results"]]
        self.assertEqual(counts[0], 1)
        self.assertEqual(counts[2], 0)
        self.assertEqual(counts[3], 0)
        (dom,) = [h for h in data["results"][1]["hits"] if h["type"] == "domain-name"]
        self.assertEqual(len(dom["feeds"]), 2)
        _, data = self.expect(200, "POST", "/api/indicators/lookup",
                              {"values": values, "include_expired": True}, JSON)
        self.assertEqual(len(data["results"][3]["hits"]), 1)
        # 1000 SHA-256 hashes (over the 64 KiB of other writes) pass; 1001 do not
        many = ["%064x" % i for i in range(1000)]
        many[7] = "ab" * 32
        _, data = self.expect(200, "POST", "/api/indicators/lookup", {"values": many}, JSON)
        self.assertEqual(len(data["results"]), 1000)
        self.assertEqual(len(data["results"][7]["hits"]), 1)
        _, err = self.expect(413, "POST", "/api/indicators/lookup",
                             {"values": many + ["x.example"]}, JSON, code="payload_too_large")
        self.assertIn("1000", err["error"])
        for body, field in (({}, "values"), ({"values": "x"}, "values"),
                            ({"values": [1]}, "values[0]"), ({"values": [""]}, "values[0]"),
                            ({"values": ["x"], "type": "bogus"}, "type"),
                            ({"values": ["x"], "include_expired": "yes"}, "include_expired")):
            _, err = self.expect(400, "POST", "/api/indicators/lookup", body, JSON,
                                 code="invalid_field")
            self.assertIn(field, err["error"])
        self.expect(405, "GET", "/api/indicators/lookup", code="method_not_allowed")

    # -- exports -------------------------------------------------------------
    def test_export_formats(self):
        status, h, txt = self.get_text("/api/export?format=txt")
        self.assertEqual(status, 200)
        self.assertEqual(h["Content-Type"], "text/plain; charset=utf-8")
        lines = txt.splitlines()
        self.assertEqual(lines.count("evil.example"), 1)  # two feeds, one line
        self.assertIn("198.51.100.7", lines)
        self.assertIn("203.0.113.0/24", lines)
        self.assertNotIn("http://expired.example/", lines)
        self.assertEqual(lines.count("revoked.example"), 1)  # revoked in fa, live in fb
        # IPs first (by type), stable
        self.assertLess(lines.index("198.51.100.7"), lines.index("evil.example"))
        self.assertEqual(self.get_text("/api/export?format=txt")[2], txt)
        # by type, one feed
        _, _, ips = self.get_text("/api/threat-feeds/fa/export?format=txt&type=ip")
        self.assertEqual(ips.splitlines(), ["198.51.100.7", "203.0.113.0/24"])
        _, _, fb = self.get_text("/api/threat-feeds/fb/export")
        self.assertEqual(sorted(fb.splitlines()), ["198.51.100.8", "evil.example",
                                                   "revoked.example"])
        # csv with a header row, quoting
        status, h, csv = self.get_text("/api/export?format=csv&type=domain,url")
        self.assertEqual(status, 200)
        self.assertTrue(h["Content-Type"].startswith("text/csv"))
        rows = csv.split("\r\n")
        self.assertEqual(rows[0], "value,type,feeds,first_seen,last_seen,valid_until,expired")
        self.assertIn('"http://evil.example/a,b",url,fa,', csv)
        (evil,) = [r for r in rows if r.startswith("evil.example,")]
        self.assertTrue(evil.startswith("evil.example,domain-name,fa fb,"), evil)
        # stix: a bundle of indicators
        status, h, stix = self.get_text("/api/export?format=stix&type=domain")
        self.assertEqual(status, 200)
        self.assertEqual(h["Content-Type"], "application/stix+json;version=2.1")
        self.assertEqual(stix["type"], "bundle")
        pats = sorted(o["pattern"] for o in stix["objects"])
        self.assertEqual(pats, ["[domain-name:value = 'evil.example']",
                                "[domain-name:value = 'later.example']",
                                "[domain-name:value = 'revoked.example']"])
        for o in stix["objects"]:
            self.assertEqual(o["type"], "indicator")
            self.assertRegex(o["id"], r"^indicator--[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-"
                                      r"[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
        (evil,) = [o for o in stix["objects"] if "evil" in o["pattern"]]
        self.assertEqual(evil["x_threatfeed_feeds"], ["fa", "fb"])
        (later,) = [o for o in stix["objects"] if "later" in o["pattern"]]
        self.assertEqual(later["valid_until"], "2999-01-01T00:00:00.000Z")
        # include_expired brings the expired value back
        _, _, all_txt = self.get_text("/api/export?include_expired=1&type=url")
        self.assertIn("http://expired.example/", all_txt.splitlines())
        # bad parameters
        self.expect(400, "GET", "/api/export?format=xml", code="invalid_parameter")
        self.expect(400, "GET", "/api/export?limit=0", code="invalid_parameter")
        self.expect(404, "GET", "/api/threat-feeds/nope/export", code="not_found")

    def test_limit(self):
        _, _, full = self.get_text("/api/export")
        _, _, two = self.get_text("/api/export?limit=2")
        self.assertEqual(two.splitlines(), full.splitlines()[:2])
        _, _, one = self.get_text("/api/export?format=stix&limit=1")
        self.assertEqual(len(one["objects"]), 1)
        _, _, csv = self.get_text("/api/export?format=csv&limit=1")
        self.assertEqual(len(csv.strip("\r\n").split("\r\n")), 2)  # header + 1

    def test_304_and_etag_after_a_run(self):
        # a feed of its own: the runs here must not change what the others see
        self.stack.write_bundle("c", [indicator(201, "[ipv4-addr:value = '192.0.2.10']")])
        self.expect(201, "POST", "/api/threat-feeds/", {
            "id": "fc", "name": "Feed fc", "type": "stix_bundle",
            "url": self.stack.bundle_url("c")}, JSON)
        self.addCleanup(self.req, "DELETE", "/api/threat-feeds/fc/")
        self.run_feed("fc")
        path = "/api/threat-feeds/fc/export?format=txt"
        status, h, body = self.get_text(path)
        self.assertEqual(body, "192.0.2.10\n")
        etag, lm = h["ETag"], h["Last-Modified"]
        self.assertRegex(etag, r'^"[0-9a-f]{16}"$')
        status, h2, body2 = self.get_text(path, headers={"If-None-Match": etag})
        self.assertEqual(status, 304)
        self.assertEqual(h2["ETag"], etag)
        self.assertFalse(body2)
        status, _, _ = self.get_text(path, headers={"If-Modified-Since": lm})
        self.assertEqual(status, 304)
        # HEAD: the same head, no body
        status, h3, body3 = self.req("HEAD", path)
        self.assertEqual((status, h3["ETag"]), (200, etag))
        self.assertFalse(body3)
        # other parameters, other ETag
        self.assertNotEqual(self.get_text(path + "&limit=1")[1]["ETag"], etag)
        # a run that finds nothing new writes nothing: still 304
        self.run_feed("fc")
        self.assertEqual(self.get_text(path, headers={"If-None-Match": etag})[0], 304)
        # a run that commits a new value: a new ETag, and the new content
        self.stack.write_bundle("c", [indicator(201, "[ipv4-addr:value = '192.0.2.10']"),
                                      indicator(202, "[ipv4-addr:value = '192.0.2.11']")])
        self.run_feed("fc")
        status, h4, body4 = self.get_text(path, headers={"If-None-Match": etag})
        self.assertEqual(status, 200)
        self.assertNotEqual(h4["ETag"], etag)
        self.assertEqual(body4, "192.0.2.10\n192.0.2.11\n")
        self.assertEqual(self.get_text(path, headers={"If-None-Match": h4["ETag"]})[0], 304)
        # the feed removed: its export is gone, and the all-feeds ETag moves on
        _, h5, _ = self.get_text("/api/export")
        self.expect(204, "DELETE", "/api/threat-feeds/fc/")
        self.assertNotEqual(self.get_text("/api/export")[1]["ETag"], h5["ETag"])
        self.expect(404, "GET", path, code="not_found")

    def test_export_token(self):
        path = "/api/export?format=txt&token=" + urllib.parse.quote(EXPORT_TOKEN)
        status, _, body = self.get_text(path, auth=False)
        self.assertEqual(status, 200)
        self.assertIn("evil.example", body.splitlines())
        status, _, _ = self.get_text("/api/threat-feeds/fa/export?token=" + EXPORT_TOKEN,
                                     auth=False)
        self.assertEqual(status, 200)
        status, _, _ = self.get_text("/api/export", auth=False,
                                     headers={"Authorization": "Bearer " + EXPORT_TOKEN})
        self.assertEqual(status, 200)
        # nothing else: not the lookup, not the feeds, not a write; no wrong token
        for method, p in (("GET", "/api/indicators/?value=evil.example&token=" + EXPORT_TOKEN),
                          ("GET", "/api/threat-feeds/?token=" + EXPORT_TOKEN),
                          ("GET", "/api/export?token=wrong"),
                          ("GET", "/api/export?token=" + API_TOKEN),
                          ("POST", "/api/threat-feeds/fa/consume/?token=" + EXPORT_TOKEN)):
            status, _, err = self.req(method, p, auth=False)
            self.assertEqual(status, 401, (method, p))
            self.assertEqual(err["code"], "unauthorized")

    def test_ttl_days(self):
        path = "/api/threat-feeds/fb/export?format=txt"
        _, h, body = self.get_text(path)
        self.assertTrue(body)
        # a ttl that has passed for everything: nothing left, a new ETag
        self.expect(200, "PATCH", "/api/threat-feeds/fb/", {"options": {"ttl_days": 1}}, JSON)
        self.addCleanup(self.req, "PATCH", "/api/threat-feeds/fb/",
                        {"options": {"ttl_days": None}}, JSON)
        _, h2, body2 = self.get_text(path)
        self.assertEqual(body2, body)  # written just now: within a day
        self.assertNotEqual(h2["ETag"], h["ETag"])  # the setting is part of the state
        self.expect(400, "PATCH", "/api/threat-feeds/fb/", {"options": {"ttl_days": 0}}, JSON,
                    code="invalid_field")


if __name__ == "__main__":
    unittest.main()
