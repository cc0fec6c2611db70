"""TAXII 2.1 as real servers do it (issue 12): a collection in any of the
discovery document's API roots, and one `next` token repeated for a whole
paging session, as the OASIS reference server hands it out. test_connection
(`threatfeed test-connection`, which the API relays) must find what a run
finds: the same root, or the same error."""
import json
import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from runenv import COLLECTION, TERMINAL
from test_api import ApiCase
from test_runs import RunTest, lines

PAGE = 100
OTHER_COLLECTION = "0b5b8c1e-2f0a-4a8e-9d43-3f7c0d2f0a11"      # api0's, in --api-roots modes
WRITE_ONLY_COLLECTION = "472c94ae-3113-4e3e-a4dd-a9f4ac7471d4"  # api1's, can_read false


class ApiRoots(RunTest):
    def test_collection_in_a_later_root_is_found(self):
        # default root api0 lacks the collection, api403 refuses, api404 has
        # none, the fourth is unreachable, api1 (listed last) has it
        self.feed_up("f", "--api-roots", "multi")
        t = self.env.wait(self.env.consume("f"), TERMINAL, timeout=120)
        self.assertEqual(t["status"], "completed", t)
        self.assertIsNone(t["error"])
        self.assertEqual(t["progress"]["objects_processed"], 1000)
        self.assertEqual(len(lines(self.env.export("f"))), 1000)

    def test_no_root_has_it_names_roots_and_what_is_readable(self):
        self.feed_up("f", "--api-roots", "missing")
        t = self.env.wait(self.env.consume("f"), TERMINAL, timeout=120)
        self.assertEqual(t["status"], "failed", t)
        err = t["error"]
        self.assertIn("not found", err)
        self.assertIn("4 API roots", err)
        for part in ("/api0/", "/api403/", "/api404/", "127.0.0.1:9/dead/",
                     "Community sharing", "0b5b8c1e-2f0a-4a8e-9d43-3f7c0d2f0a11", "403", "404"):
            self.assertIn(part, err)
        self.assertEqual(lines(self.env.export("f")), [])


class ProbeFindsWhatARunFinds(RunTest):
    """test_connection of a taxii21 feed: discovery and the search through
    the API roots by the run's own code, each request asked once."""

    def probe(self, feed_id):
        return json.loads(self.env.cli("test-connection", feed_id).stdout)

    def run_error(self, feed_id):
        t = self.env.wait(self.env.consume(feed_id), TERMINAL, timeout=120)
        self.assertEqual(t["status"], "failed", t)
        return t["error"]

    def test_collection_in_a_non_default_root(self):
        up = self.feed_up("f", "--api-roots", "multi")
        out = self.probe("f")
        self.assertTrue(out["ok"], out)
        self.assertEqual(out["api_root"], up.base + "/api1/")
        self.assertEqual(out["detail"],
                         'collection %s "Synthetic indicators" is readable in API root %s/api1/ '
                         "(not the default: 4 other roots searched first)" % (COLLECTION, up.base))
        stats = up.ctl("stats")
        # a test, not a run: no objects asked for, and no root asked twice
        self.assertEqual(stats["objects_requests"], [])
        self.assertEqual(stats["requests"]["other_root"], 2 + 2 + 2, stats["requests"])

    def test_collection_in_the_default_root(self):
        up = self.feed_up("f")
        out = self.probe("f")
        self.assertTrue(out["ok"], out)
        self.assertEqual(out["api_root"], up.base + "/api1/")
        self.assertIn("(the discovery document's default)", out["detail"])

    def test_feed_url_that_is_the_api_root(self):
        up = self.env.upstream("--objects", "10")
        self.env.add_feed("f", up, url=up.base + "/api1")
        out = self.probe("f")
        self.assertTrue(out["ok"], out)
        self.assertEqual(out["api_root"], up.base + "/api1/")
        self.assertIn("(the feed's url)", out["detail"])

    def test_not_found_says_what_a_run_says(self):
        up = self.feed_up("f", "--api-roots", "missing")
        out = self.probe("f")
        self.assertFalse(out["ok"], out)
        self.assertIsNone(out["api_root"])
        detail = out["detail"]
        self.assertIn("collection %s not found in the 4 API roots searched" % COLLECTION, detail)
        # every root, and what happened there
        for part in ("; %s/api0/: readable collections %s \"Community sharing\"" % (up.base, OTHER_COLLECTION),
                     "; %s/api403/: authentication failed (HTTP 403): Forbidden" % up.base,
                     "; %s/api404/: no collections (HTTP 404)" % up.base,
                     "; http://127.0.0.1:9/dead/: API root: "):
            self.assertIn(part, detail)
        self.assertEqual(up.ctl("stats")["objects_requests"], [])
        # word for word the error of a run
        self.assertEqual(detail, self.run_error("f"))

    def test_listed_but_not_readable(self):
        up = self.feed_up("f", "--api-roots", "multi", collection=WRITE_ONLY_COLLECTION)
        out = self.probe("f")
        self.assertFalse(out["ok"], out)
        self.assertEqual(out["api_root"], up.base + "/api1/")
        self.assertEqual(out["detail"],
                         "collection %s in API root %s/api1/ is not readable with these "
                         "credentials (can_read is false)" % (WRITE_ONLY_COLLECTION, up.base))
        self.assertEqual(out["detail"], self.run_error("f"))

    def test_basic_auth_only_with_a_username(self):
        # A run sends no Basic auth without a username, even with a secret
        # (README, taxii21): the probe must not either — it used to send
        # ":secret", which this upstream (username "") accepts.
        up = self.env.upstream("--objects", "10", "--username", "", "--password", "p")
        self.env.add_feed("nouser", up, username="", secret="p")
        self.env.add_feed("user", up, username="u", secret="p")
        out = self.probe("nouser")
        self.assertFalse(out["ok"], out)
        self.assertIn("authentication failed (HTTP 401)", out["detail"])
        self.assertEqual(out["detail"], self.run_error("nouser"))
        # a username sends Basic: the wrong one is refused, by probe and run alike
        out = self.probe("user")
        self.assertFalse(out["ok"], out)
        self.assertEqual(out["detail"], self.run_error("user"))


class StallingDiscovery:
    """A TAXII discovery document (on a server of its own) whose default API
    root never answers, listing the collection's real root next."""

    def __init__(self, real_root):
        release = self.release = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path != "/taxii2/":
                    release.wait(60)          # the stalled root: nothing until released
                    return
                body = json.dumps({"title": "stalling", "default": "/stall/",
                                   "api_roots": ["/stall/", real_root]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/taxii+json;version=2.1")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = "http://127.0.0.1:%d" % self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class ProbeDeadline(RunTest):
    def test_a_stalled_root_uses_up_the_time_and_the_rest_is_not_asked(self):
        up = self.env.upstream("--objects", "10")
        stalling = StallingDiscovery(up.base + "/api1/")
        self.addCleanup(stalling.close)
        self.env.add_feed("f", up, url=stalling.base + "/taxii2/")
        out = json.loads(self.env.cli("test-connection", "f").stdout)
        self.assertFalse(out["ok"], out)
        self.assertIsNone(out["api_root"])
        detail = out["detail"]
        self.assertIn("not found in the 2 API roots searched; %s/stall/: API root: " % stalling.base,
                      detail)
        self.assertTrue(detail.endswith("; %s/api1/: API root: not asked, the test's 8 s were up"
                                        % up.base), detail)
        self.assertEqual(up.ctl("stats")["total_requests"], 0, detail)


class ApiTestConnection(ApiCase):
    """The API relays the probe's answer: detail and api_root."""
    upstream_args = ("--api-roots", "multi")

    def test_api_root_and_detail_relayed(self):
        self.new_feed("tc")
        _, data = self.expect(200, "POST", "/api/threat-feeds/tc/test_connection/", {})
        self.assertEqual(set(data), {"ok", "detail", "api_root"})
        self.assertTrue(data["ok"], data)
        base = self.stack.upstream_url.rsplit("/taxii2/", 1)[0]
        self.assertEqual(data["api_root"], base + "/api1/")
        self.assertIn("is readable in API root %s/api1/ (not the default" % base, data["detail"])
        self.expect(204, "DELETE", "/api/threat-feeds/tc/")

    def test_not_found_relayed_whole(self):
        self.new_feed("tc2", collection=WRITE_ONLY_COLLECTION.replace("4", "5"))
        _, data = self.expect(200, "POST", "/api/threat-feeds/tc2/test_connection/", {})
        self.assertFalse(data["ok"], data)
        self.assertIsNone(data["api_root"])
        # the last root's note is there whole: nothing was cut on the way
        self.assertIn("not found in the 5 API roots searched", data["detail"])
        self.assertRegex(data["detail"], r"/api1/: readable collections %s \"Synthetic indicators\"$"
                         % COLLECTION)
        self.expect(204, "DELETE", "/api/threat-feeds/tc2/")


class RepeatedNextToken(RunTest):
    def test_same_token_every_page_completes_with_exact_counts(self):
        up = self.feed_up("f", "--session-next")
        t = self.env.wait(self.env.consume("f"), TERMINAL, timeout=120)
        self.assertEqual(t["status"], "completed", t)
        p = t["progress"]
        self.assertEqual(p["objects_processed"], 1000)
        self.assertEqual(p["indicators_created"], 1000)
        self.assertEqual(p["pages_done"], 1000 // PAGE)
        self.assertEqual(len(lines(self.env.export("f"))), 1000)
        # the prefetch matches a page by its request, and with one session
        # token pages 2.. ask the same URL: each page must still go out
        # exactly once, in order, the first without a token
        reqs = up.ctl("stats")["objects_requests"]
        self.assertEqual(len(reqs), 1000 // PAGE, reqs)
        self.assertEqual([r["page"] for r in reqs], sorted(r["page"] for r in reqs))
        self.assertFalse(reqs[0].get("next"))
        self.assertEqual(len({r.get("next") for r in reqs[1:]}), 1, reqs)
        self.assertTrue(reqs[1].get("next"))
        self.assertEqual({r["status"] for r in reqs}, {200})

    def test_session_that_serves_the_same_page_again_fails_clearly(self):
        up = self.feed_up("f", "--session-next")
        up.ctl("faults", {"loop_next": {"page": "all", "times": -1}})
        t = self.env.wait(self.env.consume("f"), TERMINAL, timeout=120)
        self.assertEqual(t["status"], "failed", t)
        self.assertIn("loops", t["error"])
        self.assertIn("repeats", t["error"])
        # what was committed before the loop was seen stays, whole pages only
        self.assertEqual(len(lines(self.env.export("f"))) % PAGE, 0)


if __name__ == "__main__":
    unittest.main()
