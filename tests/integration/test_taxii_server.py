"""The read-only TAXII 2.1 server (issue 16 §3; README "TAXII 2.1 server")
through the real web server: every endpoint of the TAXII 2.1 sections on
discovery, API root, collections, manifest, objects, one object and its
versions, with their request and error cases (Accept, 404s, limit,
added_after, next, match[...], the date-added headers, the error message,
HTTP Basic), and threatfeed's own TAXII 2.1 consumer pointed at it: a
second feed ingests every object of the first, byte for byte."""
import base64
import http.client
import json
import time
import unittest

from stack import TERMINAL
from test_api import ApiCase, TokenStack

TAXII = "application/taxii+json;version=2.1"
ALL = "2f4d6c1e-8b3a-4e5f-9a7c-0d1e2f3a4b5c"   # TF_TAXII_ALL_COLLECTION
TOKEN = "taxii-t0ken"
VIEWER = "v1ewer-secret"
ROOT = "/taxii2/root/"
SRC = ROOT + "collections/src/"
OBJECTS = 640      # the upstream's synthetic objects


def basic(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


def raw_objects(body):
    """The members of the envelope's "objects" as the bytes the server sent
    (the server writes them back to back, each the stored object)."""
    text = body.decode()
    start = text.find('"objects":[')
    if start < 0:
        return []
    dec = json.JSONDecoder()
    i, out = start + len('"objects":['), []
    while text[i] != "]":
        obj, end = dec.raw_decode(text, i)
        out.append(text[i:end])
        i = end + (1 if text[end] == "," else 0)
    return out


def record_objects(export_text):
    """{id: the stored object's bytes} of `threatfeed export FEED` lines (the
    source object is the record's last member, verbatim)."""
    out = {}
    for line in export_text.splitlines():
        rec = json.loads(line)
        cut = line.index(',"object":') + len(',"object":')
        out[rec["id"]] = line[cut:-1]
    return out


class TaxiiServer(ApiCase):
    conf = {"api_token": TOKEN, "token.reader": "viewer " + VIEWER}
    auth = {"Authorization": "Bearer " + TOKEN}
    stack_class = TokenStack
    upstream_args = ["--objects", str(OBJECTS), "--max-page-size", "100"]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = cls.stack
        feed = s.demo_feed("src", name="Source feed")
        st, _, data = s.request("POST", "/api/threat-feeds/", body=feed, headers=cls.auth)
        assert st == 201, data
        st, _, data = s.request("POST", "/api/threat-feeds/src/consume/", headers=cls.auth)
        assert st == 202, data
        task = s.wait_task(data["task_id"], timeout=120, headers=cls.auth)
        assert task["status"] == "completed", task
        cls.stored = record_objects(s.cli("export", "src", check=True).stdout)
        assert len(cls.stored) == OBJECTS, len(cls.stored)

    # -- helpers ---------------------------------------------------------------
    def get(self, path, headers=None, auth=True, method="GET"):
        """(status, headers, raw body) of one request."""
        hdrs = {"Accept": TAXII}
        if auth:
            hdrs.update(self.auth)
        hdrs.update(headers or {})
        for k in [k for k, v in hdrs.items() if v is None]:
            del hdrs[k]
        conn = http.client.HTTPConnection("127.0.0.1", self.stack.port, timeout=60)
        try:
            conn.request(method, self.stack.prefix + path, headers=hdrs)
            r = conn.getresponse()
            return r.status, r.headers, r.read()
        finally:
            conn.close()

    def ok(self, path, **kw):
        st, h, body = self.get(path, **kw)
        self.assertEqual(st, 200, (path, body[:300]))
        self.assertEqual(h.get("Content-Type"), TAXII)
        return h, json.loads(body), body

    def error(self, status, path, code=None, **kw):
        """A TAXII 2.1 error message (§3.6.1): title required, http_status a
        string, the TAXII media type."""
        st, h, body = self.get(path, **kw)
        self.assertEqual(st, status, (path, body[:300]))
        self.assertEqual(h.get("Content-Type"), TAXII, (path, body))
        err = json.loads(body)
        self.assertIsInstance(err.get("title"), str, err)
        self.assertTrue(err["title"])
        self.assertEqual(err.get("http_status"), str(status), err)
        self.assertIsInstance(err.get("description"), str, err)
        if code:
            self.assertEqual(err.get("error_code"), code, err)
        return h, err

    def all_pages(self, path, limit):
        """Every page of a listing by `next`: (objects in order, pages)."""
        got, pages, nxt = [], [], None
        for _ in range(1000):
            sep = "&" if "?" in path else "?"
            url = "%s%slimit=%d" % (path, sep, limit) + ("&next=" + nxt if nxt else "")
            h, env, body = self.ok(url)
            pages.append((h, env, body))
            got.extend(raw_objects(body))
            if not env.get("more"):
                self.assertNotIn("next", env)
                return got, pages
            nxt = env["next"]
            self.assertIsInstance(nxt, str)
        self.fail("paging does not end")

    # -- discovery, API root, collections (§4.1, §4.2, §5.1, §5.2) -----------------
    def test_discovery(self):
        _, d, _ = self.ok("/taxii2/")
        self.assertIsInstance(d["title"], str)
        root = "http://127.0.0.1:%d%s" % (self.stack.port, ROOT)
        self.assertEqual(d["api_roots"], [root])
        self.assertEqual(d["default"], root)
        self.ok("/taxii2")   # the trailing slash is optional here too

    def test_api_root(self):
        _, r, _ = self.ok(ROOT)
        self.assertIsInstance(r["title"], str)
        self.assertEqual(r["versions"], [TAXII])
        self.assertIsInstance(r["max_content_length"], int)

    def test_collections(self):
        _, c, _ = self.ok(ROOT + "collections/")
        by_id = {x["id"]: x for x in c["collections"]}
        self.assertEqual(set(by_id), {ALL, "src"})
        self.assertEqual(by_id["src"]["title"], "Source feed")
        for col in by_id.values():
            self.assertIs(col["can_read"], True)
            self.assertIs(col["can_write"], False)
            self.assertEqual(col["media_types"], ["application/stix+json;version=2.1"])
        _, one, _ = self.ok(SRC)
        self.assertEqual(one, by_id["src"])
        _, one, _ = self.ok(ROOT + "collections/%s/" % ALL)
        self.assertEqual(one, by_id[ALL])

    def test_not_found(self):
        for path in (ROOT + "collections/nope/", ROOT + "collections/nope/objects/",
                     ROOT + "collections/nope/manifest/", ROOT + "collections/Bad!/objects/",
                     "/taxii2/other/", ROOT + "status/%s/" % ALL,
                     SRC + "objects/indicator--00000000-0000-4000-8000-000000000000/",
                     SRC + "objects/indicator--00000000-0000-4000-8000-000000000000/versions/",
                     SRC + "objects/not-an-id/"):
            self.error(404, path, "not_found")

    def test_accept(self):
        for bad in ("application/json", "application/taxii+json;version=2.0",
                    "text/html", "application/stix+json;version=2.1",
                    "application/taxii+json;version=2.1;q=0"):
            for path in ("/taxii2/", ROOT, ROOT + "collections/", SRC, SRC + "objects/",
                         SRC + "manifest/"):
                self.error(406, path, "not_acceptable", headers={"Accept": bad})
        for good in ("application/taxii+json", "application/taxii+json; version=2.1",
                     "text/html, application/taxii+json;version=2.1", "*/*", None):
            self.ok(SRC + "objects/?limit=1", headers={"Accept": good})

    def test_read_only(self):
        h, _ = self.error(405, SRC + "objects/", "method_not_allowed", method="POST")
        self.assertIn("GET", h.get("Allow"))
        self.error(405, SRC + "objects/%s/" % next(iter(self.stored)), method="DELETE")

    # -- auth ------------------------------------------------------------------------
    def test_auth(self):
        h, _ = self.error(401, SRC + "objects/?limit=1", "unauthorized", auth=False)
        self.assertEqual(h.get("WWW-Authenticate"), 'Basic realm="threatfeed"')
        # a TAXII client's HTTP Basic: the token is the password, any user name
        for tok in (TOKEN, VIEWER):
            self.ok(SRC + "objects/?limit=1", auth=False,
                    headers={"Authorization": basic("anyone", tok)})
        self.ok(SRC + "objects/?limit=1", auth=False,
                headers={"Authorization": "Bearer " + VIEWER})
        for wrong in (basic("anyone", "nope"), basic("", ""), "Basic !!!", basic(TOKEN, "")):
            self.error(401, SRC, "unauthorized", auth=False, headers={"Authorization": wrong})
        # Basic opens the TAXII server only, never the API
        st, _, _ = self.get("/api/health", auth=False,
                            headers={"Authorization": basic("x", TOKEN)})
        self.assertEqual(st, 401)

    # -- objects (§5.4) ----------------------------------------------------------------
    def test_objects_every_one_once_paged_by_next(self):
        got, pages = self.all_pages(SRC + "objects/", 37)
        ids = [json.loads(o)["id"] for o in got]
        self.assertEqual(len(ids), len(set(ids)))
        self.assertEqual(set(ids), set(self.stored))
        # verbatim: the stored bytes
        for o in got:
            self.assertEqual(o, self.stored[json.loads(o)["id"]])
        self.assertEqual(len(pages), -(-OBJECTS // 37))
        last = ""
        for h, env, _ in pages:
            first_h, last_h = h.get("X-TAXII-Date-Added-First"), h.get("X-TAXII-Date-Added-Last")
            self.assertRegex(first_h, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
            self.assertLessEqual(first_h, last_h)
            self.assertLess(last, first_h)   # strictly later than the page before
            last = last_h
            self.assertLessEqual(len(env["objects"]), 37)

    def test_added_after_continues_where_a_page_ended(self):
        h, p1, _ = self.ok(SRC + "objects/?limit=50")
        h2, p2, _ = self.ok(SRC + "objects/?limit=50&next=" + p1["next"])
        _, p3, _ = self.ok(SRC + "objects/?limit=50&added_after=" +
                           h.get("X-TAXII-Date-Added-Last"))
        self.assertEqual(p3["objects"], p2["objects"])
        # strictly after: a page's first date added leaves that object out
        _, p4, _ = self.ok(SRC + "objects/?limit=50&added_after=" +
                           h.get("X-TAXII-Date-Added-First"))
        self.assertEqual(p4["objects"][:49], p1["objects"][1:])
        # after everything: nothing, no headers
        _, h_end, _ = self.get(SRC + "objects/?added_after=2999-01-01T00:00:00Z")
        _, end, _ = self.ok(SRC + "objects/?added_after=2999-01-01T00:00:00Z")
        self.assertEqual(end, {"more": False})
        self.assertIsNone(h_end.get("X-TAXII-Date-Added-First"))
        # a time long before: everything
        _, first, _ = self.ok(SRC + "objects/?limit=5&added_after=2000-01-01T00:00:00.000000Z")
        self.assertEqual(first["objects"], p1["objects"][:5])

    def test_limit(self):
        _, env, _ = self.ok(SRC + "objects/?limit=3")
        self.assertEqual(len(env["objects"]), 3)
        self.assertIs(env["more"], True)
        # above the server's maximum: capped, not refused (§3.4)
        _, env, _ = self.ok(SRC + "objects/?limit=1000000")
        self.assertEqual(len(env["objects"]), OBJECTS)
        self.assertIs(env["more"], False)
        _, env, _ = self.ok(SRC + "objects/")
        self.assertEqual(len(env["objects"]), OBJECTS)
        for bad in ("0", "-1", "abc", "1.5", "+3", "%20"):
            self.error(400, SRC + "objects/?limit=" + bad, "invalid_parameter")
            self.error(400, SRC + "manifest/?limit=" + bad, "invalid_parameter")

    def test_bad_added_after_and_next(self):
        for bad in ("yesterday", "2024-13-01T00:00:00Z", "2024-01-01"):
            self.error(400, SRC + "objects/?added_after=" + bad, "invalid_parameter")
            self.error(400, SRC + "manifest/?added_after=" + bad, "invalid_parameter")
        for bad in ("abc", "-5", "1e9"):
            self.error(400, SRC + "objects/?next=" + bad, "invalid_parameter")

    def test_match_type_and_id(self):
        types = {}
        for oid in self.stored:
            types.setdefault(oid.split("--")[0], set()).add(oid)
        self.assertGreater(len(types), 1)
        for t, ids in types.items():
            got, _ = self.all_pages(SRC + "objects/?match[type]=" + t, 100)
            self.assertEqual({json.loads(o)["id"] for o in got}, ids)
        two = sorted(types)[:2]
        got, _ = self.all_pages(SRC + "objects/?match%5Btype%5D=" + ",".join(two), 100)
        self.assertEqual(len(got), sum(len(types[t]) for t in two))
        some = sorted(self.stored)[:3]
        _, env, _ = self.ok(SRC + "objects/?match[id]=" + ",".join(some))
        self.assertEqual(sorted(o["id"] for o in env["objects"]), some)
        _, env, _ = self.ok(SRC + "objects/?match[type]=x-nothing-here")
        self.assertEqual(env, {"more": False})
        self.error(400, SRC + "objects/?match[type]=Bad_Type", "invalid_parameter")
        self.error(400, SRC + "objects/?match[id]=nope", "invalid_parameter")
        self.error(400, SRC + "objects/?match[type]=indicator,", "invalid_parameter")

    def test_match_version_and_spec_version(self):
        n = len(self.stored)
        for v in ("last", "first", "all", "first,last"):
            _, env, _ = self.ok(SRC + "objects/?match[version]=" + v)
            self.assertEqual(len(env["objects"]), n)
        oid = sorted(self.stored)[0]
        obj = json.loads(self.stored[oid])
        _, env, _ = self.ok(SRC + "objects/?match[version]=%s&match[id]=%s" % (obj["modified"], oid))
        self.assertEqual([o["id"] for o in env["objects"]], [oid])
        _, env, _ = self.ok(SRC + "objects/?match[version]=2001-01-01T00:00:00Z&match[id]=" + oid)
        self.assertEqual(env, {"more": False})
        self.error(400, SRC + "objects/?match[version]=newest", "invalid_parameter")
        _, env, _ = self.ok(SRC + "objects/?match[spec_version]=2.1")
        self.assertEqual(len(env["objects"]), n)
        _, env, _ = self.ok(SRC + "objects/?match[spec_version]=2.0")
        self.assertEqual(env, {"more": False})
        _, env, _ = self.ok(SRC + "objects/?match[spec_version]=2.0,2.1&limit=10")
        self.assertEqual(len(env["objects"]), 10)
        self.error(400, SRC + "objects/?match[spec_version]=two", "invalid_parameter")

    # -- manifest (§5.3) ----------------------------------------------------------------
    def test_manifest(self):
        h, env, _ = self.ok(SRC + "manifest/?limit=25")
        _, objs, _ = self.ok(SRC + "objects/?limit=25")
        self.assertEqual([m["id"] for m in env["objects"]], [o["id"] for o in objs["objects"]])
        for m, o in zip(env["objects"], objs["objects"]):
            self.assertEqual(set(m), {"id", "date_added", "version", "media_type"})
            self.assertEqual(m["media_type"], "application/stix+json;version=2.1")
            self.assertEqual(m["version"][:19], o["modified"][:19])
        self.assertEqual(env["objects"][0]["date_added"], h.get("X-TAXII-Date-Added-First"))
        self.assertEqual(env["objects"][-1]["date_added"], h.get("X-TAXII-Date-Added-Last"))
        self.assertEqual(env["next"], objs["next"])
        got, _ = self.all_pages(SRC + "manifest/", 200)
        self.assertEqual({json.loads(m)["id"] for m in got}, set(self.stored))

    # -- one object and its versions (§5.5, §5.7) ---------------------------------------
    def test_object_and_versions(self):
        oid = sorted(self.stored)[5]
        h, env, body = self.ok(SRC + "objects/%s/" % oid)
        self.assertEqual(raw_objects(body), [self.stored[oid]])
        self.assertIs(env["more"], False)
        self.assertEqual(h.get("X-TAXII-Date-Added-First"), h.get("X-TAXII-Date-Added-Last"))
        _, v, _ = self.ok(SRC + "objects/%s/versions/" % oid)
        self.assertEqual(len(v["versions"]), 1)
        self.assertEqual(v["versions"][0][:19], json.loads(self.stored[oid])["modified"][:19])
        _, env, _ = self.ok(SRC + "objects/%s/?added_after=2999-01-01T00:00:00Z" % oid)
        self.assertEqual(env, {"more": False})
        # the collection of every feed has it too
        _, env, body = self.ok(ROOT + "collections/%s/objects/%s/" % (ALL, oid))
        self.assertEqual(raw_objects(body), [self.stored[oid]])

    def test_all_collection(self):
        got, _ = self.all_pages(ROOT + "collections/%s/objects/" % ALL, 500)
        ids = {json.loads(o)["id"] for o in got}
        self.assertTrue(set(self.stored) <= ids)

    # -- our own consumer against our own server ----------------------------------------
    def test_our_consumer_ingests_every_object_byte_identical(self):
        s = self.stack
        mirror = {"id": "mirror", "name": "Mirror", "type": "taxii21",
                  "url": s.url("/taxii2/"), "collection": "src", "username": "taxii",
                  "secret": VIEWER, "interval_s": 0, "enabled": True,
                  "options": {"page_size": 97}}
        self.expect(201, "POST", "/api/threat-feeds/", mirror)
        try:
            _, t = self.expect(202, "POST", "/api/threat-feeds/mirror/consume/")
            task = s.wait_task(t["task_id"], TERMINAL, timeout=120, headers=self.auth)
            self.assertEqual(task["status"], "completed", task)
            self.assertEqual(task["progress"]["indicators_created"], OBJECTS)
            got = record_objects(s.cli("export", "mirror", check=True).stdout)
            self.assertEqual(got, self.stored)   # every object, byte for byte
            # incremental: the next run starts after the last date added
            _, t = self.expect(202, "POST", "/api/threat-feeds/mirror/consume/")
            task = s.wait_task(t["task_id"], TERMINAL, timeout=120, headers=self.auth)
            self.assertEqual(task["status"], "completed", task)
            self.assertEqual(task["progress"]["objects_processed"], 0, task)
            # its collection serves the same bytes in turn
            got, _ = self.all_pages(ROOT + "collections/mirror/objects/", 1000)
            self.assertEqual({json.loads(o)["id"]: o for o in got}, self.stored)
        finally:
            self.expect(204, "DELETE", "/api/threat-feeds/mirror/")

    # -- a cancel_job rollback and the date-added order (runs last: it changes src) ----
    def manifest_all(self):
        got, _ = self.all_pages(SRC + "manifest/", 1000)
        return [json.loads(m) for m in got]

    def test_zz_cancel_job_rollback_restores_the_order(self):
        s = self.stack
        before = self.manifest_all()
        last_before = max(m["date_added"] for m in before)
        s.upstream_ctl("reset", {})
        self.addCleanup(s.upstream_ctl, "reset", {})
        s.upstream_ctl("data", {"bump_versions": 150})
        # the run commits its first page (100 new versions), then its second
        # page stalls until the cancel
        s.upstream_ctl("faults", {"page_delay_ms": 0,
                                  "stall": {"page": 1, "after_bytes": -1, "seconds": 60}})
        _, t = self.expect(202, "POST", "/api/threat-feeds/src/consume/")
        s.wait_task(t["task_id"], {"running"}, timeout=60, headers=self.auth)
        for _ in range(600):
            task = s.task(t["task_id"], headers=self.auth)
            if task["progress"]["pages_done"] >= 1:
                break
            time.sleep(0.05)
        self.assertEqual(task["progress"]["indicators_updated"], 100, task)
        moved = self.manifest_all()
        self.assertNotEqual(moved, before)   # the committed page moved 100 objects
        self.expect(202, "POST", "/api/threat-feeds/cancel-task/%s/" % t["task_id"],
                    {"mode": "cancel_job"})
        task = s.wait_task(t["task_id"], TERMINAL, timeout=60, headers=self.auth)
        self.assertEqual(task["status"], "cancelled", task)
        # exactly as before: the same objects, dates added and versions
        self.assertEqual(self.manifest_all(), before)
        # a client that read past the rolled-back dates misses nothing: the
        # next run's dates come after them
        seen_last = max(m["date_added"] for m in moved)
        s.upstream_ctl("reset", {})
        _, t = self.expect(202, "POST", "/api/threat-feeds/src/consume/")
        task = s.wait_task(t["task_id"], TERMINAL, timeout=120, headers=self.auth)
        self.assertEqual(task["status"], "completed", task)
        self.assertEqual(task["progress"]["indicators_updated"], 150, task)
        got, _ = self.all_pages(SRC + "manifest/?added_after=" + seen_last, 1000)
        self.assertEqual(len(got), 150)
        got, _ = self.all_pages(SRC + "manifest/?added_after=" + last_before, 1000)
        self.assertEqual(len(got), 150)


if __name__ == "__main__":
    unittest.main()
