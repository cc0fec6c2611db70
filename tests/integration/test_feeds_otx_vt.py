"""The otx and virustotal feed drivers end to end with real processes
(CLI → supervisor → worker → the test upstream's OTX and VirusTotal look-alikes
→ store): exact counts, the incremental OTX cursor, stop_now keeping whole
pages, VT's rate-limit budget (and cancelling during its wait), 429 with
Retry-After, 404 as a result, and hostile content (docs/SPEC.md §3, §4). Every wait is
bounded generously; nothing asserts speed."""
import importlib.util
import json
import os
import threading
import time
import types
import unittest
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

from runenv import REPO, RunEnv, TERMINAL

_spec = importlib.util.spec_from_file_location(
    "tf_upstream", os.path.join(REPO, "tests", "upstream", "upstream.py"))
upstream = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(upstream)

PER_PULSE = upstream.OTX_PER_PULSE        # 5 indicators per synthetic pulse
SHA_A = "001015aafcae8a6942366cbb0e7d39c0738752a7800c41ea1c655d47b0a4d04c"
SHA_B = "fff40032c3dc062147c530e3a0a5c7e6acda4d1f1369fbc994cddd3c19a2de88"
MISSING = "0000" + "ab" * 30              # the upstream answers 404 NotFoundError


def lines(text):
    return [json.loads(l) for l in text.splitlines() if l.strip()]


def pacing_lines(task):
    """The VT driver's one "paced at N requests/min" warning (docs/SPEC.md §2: rate-limit
    waits appear in warnings, once for the run, not once per wait)."""
    return [w for w in task["warnings"] if w.startswith("paced at ")]


def quota_lines(task):
    return [w for w in task["warnings"] if "HTTP 429" in w]


def otx_modified(i, seed=1):
    """The `modified` of synthetic pulse i, as the upstream writes it."""
    return upstream.otx_pulse(seed, i)[1]["modified"]


class FeedTest(unittest.TestCase):
    conf = {"grace_period_s": 2}

    def setUp(self):
        self.env = RunEnv(conf=self.conf)

    def tearDown(self):
        report = self.env.sanitizer_report()
        self.env.close(ok=not report)
        self.assertEqual(report, "", "sanitizer report in the runs' log")

    def otx_feed(self, *args, feed_id="o", secret="otx-key", page_size=20, **fields):
        up = self.env.upstream(*args)
        self.env.add_feed(feed_id, up, type="otx", url=up.base, collection=None, secret=secret,
                          options={"page_size": page_size}, **fields)
        return up

    def vt_feed(self, targets, *args, feed_id="v", secret="vt-key", rpm=600, **fields):
        up = self.env.upstream(*args)
        options = {"requests_per_minute": rpm}
        if targets is not None:
            options["targets"] = targets
        self.env.add_feed(feed_id, up, type="virustotal", url=up.base, collection=None,
                          secret=secret, options=options, **fields)
        return up

    def run_feed(self, feed_id, timeout=90):
        return self.env.wait(self.env.consume(feed_id), TERMINAL, timeout=timeout)


# ---- OTX ------------------------------------------------------------------------------

class Otx(FeedTest):
    def test_complete_run_exact_counts_then_incremental(self):
        up = self.otx_feed("--otx-pulses", "50")
        t = self.run_feed("o")
        self.assertEqual(t["status"], "completed", t)
        p = t["progress"]
        self.assertEqual(p["pages_done"], 3)                 # 20 + 20 + 10 pulses
        self.assertEqual(p["objects_processed"], 50)         # pulses
        self.assertEqual(p["indicators_created"], 50 * PER_PULSE)
        self.assertEqual(p["indicators_updated"], 0)
        self.assertEqual(p["indicators_skipped"], 0)
        self.assertEqual(p["percent"], 100)
        self.assertGreater(p["bytes_received"], 0)
        self.assertEqual(t["warnings"], [])
        recs = lines(self.env.export("o"))
        self.assertEqual(len(recs), 50 * PER_PULSE)
        self.assertEqual(self.env.feed("o")["indicator_count"], 50 * PER_PULSE)
        # one record per indicator: key, type, value, version, the pulse inside
        by_key = {r["id"]: r for r in recs}
        pulse0 = upstream.otx_pulse(1, 0)[1]
        ind = pulse0["indicators"][0]
        r = by_key["otx:%s:%d" % (pulse0["id"], ind["id"])]
        self.assertEqual(r["type"], ind["type"])
        self.assertEqual(r["value"], ind["indicator"])
        self.assertEqual(r["modified"], pulse0["modified"] + "Z")
        self.assertEqual(r["object"]["pulse"]["name"], pulse0["name"])
        self.assertEqual(r["object"]["pulse"]["tags"], pulse0["tags"])
        self.assertEqual(r["object"]["pulse"]["tlp"], "white")
        self.assertEqual(r["object"]["indicator"], ind["indicator"])
        kinds = {o["type"] for r in recs for o in r["observables"]}
        for k in ("ipv4-addr", "ipv6-addr", "domain-name", "url", "email-addr",
                  "file:hashes.SHA-256", "file:hashes.MD5"):
            self.assertIn(k, kinds)
        self.assertTrue(all(not r["observables"] for r in recs if r["type"] in ("CVE", "Mutex")))
        reqs = up.ctl("stats")["otx_requests"]
        self.assertEqual([q["modified_since"] for q in reqs], [None] * 3)
        self.assertEqual([q["limit"] for q in reqs], ["20"] * 3)

        # Incremental: 10 more pulses upstream; the run asks modified_since = the
        # newest pulse committed and stores only the new ones.
        up.ctl("reset")
        up.ctl("data", {"otx_pulses": 60})
        t = self.run_feed("o")
        self.assertEqual(t["status"], "completed", t)
        self.assertEqual(t["progress"]["objects_processed"], 10)
        self.assertEqual(t["progress"]["indicators_created"], 10 * PER_PULSE)
        self.assertEqual(t["progress"]["indicators_updated"], 0)
        reqs = up.ctl("stats")["otx_requests"]
        self.assertEqual(reqs[0]["modified_since"], otx_modified(49))
        self.assertEqual(len(lines(self.env.export("o"))), 60 * PER_PULSE)

        # Nothing new: one empty page, nothing stored, the cursor stays.
        up.ctl("reset")
        t = self.run_feed("o")
        self.assertEqual(t["status"], "completed", t)
        self.assertEqual(t["progress"]["objects_processed"], 0)
        self.assertEqual(t["progress"]["indicators_created"], 0)
        self.assertEqual(up.ctl("stats")["otx_requests"][0]["modified_since"], otx_modified(59))

    def test_stop_now_keeps_whole_pages_and_next_run_continues(self):
        up = self.otx_feed("--otx-pulses", "50", "--page-delay-ms", "300", page_size=5)
        up.ctl("faults", {"page_delay_ms": 300,   # the fault set replaces the flags'
                          "stall": {"page": 5, "after_bytes": 100, "seconds": 300}})
        per_page = 5 * PER_PULSE
        task = self.env.consume("o")
        self.env.wait(task, {"running"} | TERMINAL,
                      pred=lambda t: t["progress"]["pages_done"] >= 2 or t["status"] in TERMINAL)
        self.env.cancel(task, "stop_now")
        t = self.env.wait(task, TERMINAL)
        self.assertEqual(t["status"], "stopped", t)
        kept = t["progress"]["indicators_created"]
        pages = t["progress"]["pages_done"]
        self.assertGreaterEqual(pages, 2)
        self.assertLess(pages, 10, "the run was not stopped mid-way")
        self.assertEqual(kept, pages * per_page)            # whole pages only
        self.assertEqual(t["progress"]["objects_processed"], pages * 5)
        self.assertEqual(len(lines(self.env.export("o"))), kept)
        # The cursor advanced over the committed pages only.
        up.ctl("reset")
        t2 = self.run_feed("o")
        self.assertEqual(t2["status"], "completed", t2)
        self.assertEqual(up.ctl("stats")["otx_requests"][0]["modified_since"],
                         otx_modified(pages * 5 - 1))
        self.assertEqual(t2["progress"]["indicators_created"], 50 * PER_PULSE - kept)
        self.assertEqual(t2["progress"]["indicators_skipped"], 0)
        self.assertEqual(len(lines(self.env.export("o"))), 50 * PER_PULSE)

    def test_cancel_job_restores_the_store(self):
        up = self.otx_feed("--otx-pulses", "30")
        self.assertEqual(self.run_feed("o")["status"], "completed")
        before = self.env.export()
        up.ctl("data", {"otx_pulses": 80})
        # the fourth request stalls: the run is still going when the cancel
        # comes, however slowly a loaded machine runs this test
        up.ctl("reset")
        up.ctl("faults", {"page_delay_ms": 300,
                          "stall": {"page": 3, "after_bytes": 100, "seconds": 300}})
        task = self.env.consume("o")
        self.env.wait(task, {"running"} | TERMINAL,
                      pred=lambda t: t["progress"]["pages_done"] >= 1 or t["status"] in TERMINAL)
        self.env.cancel(task, "cancel_job")
        t = self.env.wait(task, TERMINAL)
        self.assertEqual(t["status"], "cancelled", t)
        self.assertEqual(self.env.export(), before)
        # and the cursor was restored too: the next run asks from pulse 29 on
        up.ctl("reset")
        self.assertEqual(self.run_feed("o")["status"], "completed")
        self.assertEqual(up.ctl("stats")["otx_requests"][0]["modified_since"], otx_modified(29))

    def test_cancel_while_a_page_stalls(self):
        up = self.otx_feed("--otx-pulses", "50")
        up.ctl("faults", {"stall": {"page": 1, "after_bytes": 100, "seconds": 120}})
        task = self.env.consume("o")
        deadline = time.monotonic() + 30
        while up.ctl("stats")["in_flight"] < 1 or self.env.status(task)["progress"]["pages_done"] < 1:
            self.assertLess(time.monotonic(), deadline, "the stalled page was never requested")
            time.sleep(0.02)
        self.env.cancel(task, "stop_now")
        t = self.env.wait(task, TERMINAL, timeout=20)
        self.assertEqual(t["status"], "stopped", t)
        self.assertEqual(t["progress"]["indicators_created"], 20 * PER_PULSE)

    def test_bad_key_fails(self):
        up = self.otx_feed(secret="bad")
        t = self.run_feed("o")
        self.assertEqual(t["status"], "failed", t)
        self.assertIn("API key rejected (HTTP 403)", t["error"])
        self.assertEqual(self.env.export("o"), "")
        self.assertEqual(len(up.ctl("stats")["otx_requests"]), 1)   # no retries on 403

    def test_429_with_retry_after_then_success(self):
        up = self.otx_feed("--otx-pulses", "50")
        up.ctl("faults", {"status": {"page": 1, "code": 429, "retry_after": 1}})
        t = self.run_feed("o")
        self.assertEqual(t["status"], "completed", t)
        self.assertEqual(t["progress"]["indicators_created"], 50 * PER_PULSE)
        self.assertTrue(any("429" in w and "retry 1" in w for w in t["warnings"]), t["warnings"])
        statuses = [q["status"] for q in up.ctl("stats")["otx_requests"]]
        self.assertEqual(statuses, [200, 429, 200, 200])

    def test_wrong_field_types_skip_pulses_with_a_warning(self):
        # Malformed pulses and indicators are skipped and counted in one
        # warning per page; the run goes on (the page's next is null: it ends).
        # Inactive and expired indicators are covered in test_otx.c: the test
        # upstream never serves them.
        up = self.otx_feed("--otx-pulses", "50")
        up.ctl("faults", {"wrong_types": {"page": 1, "variant": "fields"}})
        t = self.run_feed("o")
        self.assertEqual(t["status"], "completed", t)
        self.assertEqual(len(lines(self.env.export("o"))), 20 * PER_PULSE)
        self.assertTrue(any("malformed" in w for w in t["warnings"]), t["warnings"])
        self.assertEqual(t["progress"]["objects_processed"], 20 + 4)


class OtxTestConnection(FeedTest):
    """test_connection asks the URL its run asks: the feed's url checked as
    a base, without its trailing '/', then the API's path."""

    def probe(self, feed_id):
        return json.loads(self.env.cli("test-connection", feed_id).stdout)

    def test_url_checked_as_the_run_checks_it(self):
        # a run takes the url as a base and refuses one with a query; the
        # probe must say so too rather than ask {url}/api/v… of it
        up = self.env.upstream()
        self.env.add_feed("o", up, type="otx", url=up.base + "/?x=1", collection=None,
                          secret="otx-key")
        self.env.add_feed("v", up, type="virustotal", url=up.base + "/?x=1", collection=None,
                          secret="vt-key", options={"targets": [SHA_A], "requests_per_minute": 600})
        for feed_id in ("o", "v"):
            out = self.probe(feed_id)
            self.assertFalse(out["ok"], out)
            t = self.run_feed(feed_id)
            self.assertEqual(t["status"], "failed", t)
            self.assertIn("not an http(s) base URL", t["error"])
            self.assertEqual(out["detail"], t["error"])
        stats = up.ctl("stats")
        self.assertEqual((stats["otx_requests"], stats["vt_requests"]), ([], []))

    def test_good_key(self):
        # (the trailing '/' is dropped as a run drops it; this upstream, like
        # Python's http.server, would also take the "//api/v1" otherwise)
        up = self.env.upstream()
        self.env.add_feed("o", up, type="otx", url=up.base + "/", collection=None, secret="otx-key")
        out = self.probe("o")
        self.assertEqual(out, {"ok": True, "detail": "upstream reached (HTTP 200)"})
        self.assertEqual(self.run_feed("o")["status"], "completed")

    def test_bad_key(self):
        self.otx_feed(secret="bad")
        out = self.probe("o")
        self.assertFalse(out["ok"], out)
        self.assertEqual(out["detail"], "credentials rejected (HTTP 403)")


class OtxHostile(FeedTest):
    """Page 0 is good (20 pulses, 100 records); the fault hits page 1: the run
    fails with a clear error and nothing of the bad page is stored."""

    def run_with(self, faults, expect_in_error, stored_pages=1, pages_done=None):
        up = self.otx_feed("--otx-pulses", "50")
        for v in faults.values():
            if isinstance(v, dict) and "page" not in v:
                v["page"] = 1
        up.ctl("faults", faults)
        t = self.run_feed("o")
        self.assertEqual(t["status"], "failed", t)
        self.assertTrue(t["error"], t)
        self.assertIn(expect_in_error.lower(), t["error"].lower(), t)
        stored = len(lines(self.env.export("o")))
        self.assertEqual(stored, stored_pages * 20 * PER_PULSE, t)
        self.assertEqual(t["progress"]["indicators_created"], stored)
        self.assertEqual(t["progress"]["pages_done"],
                         stored_pages if pages_done is None else pages_done)
        return t, up

    def test_html_instead_of_json(self):
        self.run_with({"html": {}}, "page 2: expected OTX JSON, got text/html")

    def test_bad_json(self):
        self.run_with({"bad_json": {}}, "page 2: invalid JSON")

    def test_body_over_limit(self):
        self.run_with({"huge": {"bytes": 40 * 1024 * 1024}}, "larger than")

    def test_deep_nesting(self):
        self.run_with({"deep": {"depth": 10000}}, "page 2: invalid JSON")

    def test_too_many_pulses(self):
        self.run_with({"many": {"objects": 20000}}, "20000 results in one page, limit 10000")

    def test_invalid_utf8(self):
        self.run_with({"invalid_utf8": {}}, "page 2: invalid JSON")

    def test_wrong_envelope_types(self):
        self.run_with({"wrong_types": {"variant": "envelope"}}, "\"results\" is not an array")

    def test_redirect_to_other_scheme(self):
        self.run_with({"redirect": {"location": "ftp://127.0.0.1/x"}}, "redirect")

    def test_server_error_after_retries(self):
        t, _ = self.run_with({"status": {"code": 500, "times": -1, "retry_after": 0}}, "HTTP 500")
        self.assertTrue(any("retry" in w for w in t["warnings"]), t)

    def test_not_found(self):
        self.run_with({"status": {"code": 404, "times": -1}}, "HTTP 404")

    def test_forbidden_mid_run(self):
        self.run_with({"status": {"code": 403}}, "API key rejected (HTTP 403)")

    def test_truncated_body(self):
        self.run_with({"truncate": {}}, "truncated")

    def test_next_loop(self):
        # page 2's next is page 1 again, whose next (page 2) was read before
        t, _ = self.run_with({"loop_next": {"page": "all", "times": -1}}, "next loops back",
                             stored_pages=2)

    def test_endless_empty_pages(self):
        # empty pages are committed (nothing in them) until the 20th in a row
        t, up = self.run_with({"endless_more": {"times": -1}}, "20 pages in a row",
                              pages_done=1 + 20)
        self.assertEqual(len(up.ctl("stats")["otx_requests"]), 1 + 20)


# ---- VirusTotal ---------------------------------------------------------------------

class VirusTotal(FeedTest):
    TARGETS = [SHA_A, "haiku-os.org", MISSING, "198.51.100.7", "2001:DB8::7",
               "https://example.com/payload?x=1", "not a target", SHA_A.upper()]

    def test_lookups_with_a_404_target(self):
        up = self.vt_feed(self.TARGETS)
        t = self.run_feed("v")
        self.assertEqual(t["status"], "completed", t)
        p = t["progress"]
        # 8 configured: one invalid, one duplicate (case) → 6 lookups
        self.assertEqual(p["pages_total"], 6)
        self.assertEqual(p["pages_done"], 6)
        self.assertEqual(p["objects_processed"], 6)
        self.assertEqual(p["indicators_created"], 6)
        self.assertEqual(p["percent"], 100)
        self.assertTrue(any("not a target" in w for w in t["warnings"]), t["warnings"])
        # 6 lookups at 600/min: 5 waits of 0.1 s, said once
        self.assertEqual(pacing_lines(t), [
            "paced at 600 requests/min (options.requests_per_minute): 6 lookups take about 1 s"])
        recs = {r["id"]: r for r in lines(self.env.export("v"))}
        self.assertEqual(sorted(recs), sorted([
            "vt:files:" + SHA_A, "vt:domains:haiku-os.org", "vt:files:" + MISSING,
            "vt:ip_addresses:198.51.100.7", "vt:ip_addresses:2001:db8::7",
            "vt:urls:aHR0cHM6Ly9leGFtcGxlLmNvbS9wYXlsb2FkP3g9MQ"]))
        a = recs["vt:files:" + SHA_A]                       # the real recorded report
        self.assertEqual(a["type"], "vt-file")
        self.assertEqual(a["value"], SHA_A)
        self.assertEqual(a["modified"], "2020-04-10T19:24:05.000000Z")   # last_analysis_date
        self.assertEqual(a["object"], {
            "target": SHA_A, "reputation": 0, "last_analysis_date": 1586546645,
            "verdict": "malicious",
            "last_analysis_stats": {"harmless": 0, "type-unsupported": 13, "suspicious": 0,
                                    "confirmed-timeout": 0, "timeout": 0, "failure": 0,
                                    "malicious": 53, "undetected": 9}})
        self.assertEqual(a["observables"], [{"type": "file:hashes.SHA-256", "value": SHA_A}])
        h = recs["vt:domains:haiku-os.org"]
        self.assertEqual(h["type"], "vt-domain")
        self.assertEqual(h["object"]["verdict"], "harmless/undetected")
        m = recs["vt:files:" + MISSING]
        self.assertEqual(m["object"], {"target": MISSING, "last_analysis_stats": None,
                                       "reputation": None, "last_analysis_date": None,
                                       "verdict": "not_found"})
        self.assertEqual(recs["vt:ip_addresses:2001:db8::7"]["type"], "vt-ip")
        self.assertEqual(recs["vt:ip_addresses:2001:db8::7"]["value"], "2001:db8::7")
        u = recs["vt:urls:aHR0cHM6Ly9leGFtcGxlLmNvbS9wYXlsb2FkP3g9MQ"]
        self.assertEqual(u["type"], "vt-url")
        self.assertEqual(u["value"], "https://example.com/payload?x=1")
        self.assertIn(u["object"]["verdict"], ("malicious", "suspicious", "harmless/undetected"))
        paths = [q["path"] for q in up.ctl("stats")["vt_requests"]]
        self.assertEqual(paths[0], "/api/v3/files/" + SHA_A)
        self.assertIn("/api/v3/urls/aHR0cHM6Ly9leGFtcGxlLmNvbS9wYXlsb2FkP3g9MQ", paths)
        # a second run: same analysis dates → skipped; the not-found one is newer
        t = self.run_feed("v")
        self.assertEqual(t["status"], "completed", t)
        self.assertEqual(t["progress"]["indicators_skipped"], 5)
        self.assertEqual(t["progress"]["indicators_updated"], 1)

    def test_cancel_during_the_rate_limit_wait(self):
        self.vt_feed([SHA_A, SHA_B, "haiku-os.org"], rpm=1)
        task = self.env.consume("v")
        t = self.env.wait(task, {"running"} | TERMINAL, timeout=60,
                          pred=lambda t: t["stage"] == "rate_limited" or t["status"] in TERMINAL)
        self.assertEqual(t["status"], "running", t)
        self.assertRegex(t["message"], r"^next request at \d\d:\d\d:\d\d UTC \(1/min budget\)$")
        self.assertEqual(t["progress"]["pages_done"], 1)
        self.assertEqual(t["progress"]["pages_total"], 3)
        self.assertEqual(t["progress"]["percent"], 33)
        self.env.cancel(task, "stop_now")
        # the wait lasts ~60 s: a terminal state within 20 s means the sleep woke
        t = self.env.wait(task, TERMINAL, timeout=20)
        self.assertEqual(t["status"], "stopped", t)
        self.assertFalse(t["cancel"]["forced"])
        self.assertEqual([r["id"] for r in lines(self.env.export("v"))], ["vt:files:" + SHA_A])

    def test_stopped_run_is_continued_by_the_next(self):
        targets = [SHA_A, SHA_B, "haiku-os.org", "198.51.100.7", "198.51.100.8", "x.example"]
        up = self.vt_feed(targets, "--page-delay-ms", "400")
        # the fourth lookup stalls: the run is still going when the cancel comes
        up.ctl("faults", {"page_delay_ms": 400,
                          "stall": {"page": 3, "after_bytes": 100, "seconds": 300}})
        task = self.env.consume("v")
        self.env.wait(task, {"running"} | TERMINAL,
                      pred=lambda t: t["progress"]["pages_done"] >= 2 or t["status"] in TERMINAL)
        self.env.cancel(task, "stop_now")
        t = self.env.wait(task, TERMINAL)
        self.assertEqual(t["status"], "stopped", t)
        done = t["progress"]["pages_done"]
        self.assertLess(done, len(targets))
        self.assertEqual(len(lines(self.env.export("v"))), done)
        up.ctl("reset")
        t2 = self.run_feed("v")
        self.assertEqual(t2["status"], "completed", t2)
        self.assertEqual(t2["progress"]["pages_total"], len(targets) - done)
        self.assertEqual(t2["progress"]["indicators_created"], len(targets) - done)
        self.assertTrue(any("continuing" in w for w in t2["warnings"]), t2["warnings"])
        first = up.ctl("stats")["vt_requests"][0]["path"]
        self.assertTrue(first.endswith("/" + targets[done]), first)
        self.assertEqual(len(lines(self.env.export("v"))), len(targets))
        # the list was finished: the run after that starts over
        up.ctl("reset")
        t3 = self.run_feed("v")
        self.assertEqual(t3["progress"]["pages_total"], len(targets))

    def test_429_with_retry_after_then_success(self):
        up = self.vt_feed([SHA_A, SHA_B, "haiku-os.org"])
        up.ctl("faults", {"status": {"page": 1, "code": 429, "retry_after": 1}})
        t = self.run_feed("v")
        self.assertEqual(t["status"], "completed", t)
        self.assertEqual(t["progress"]["indicators_created"], 3)
        self.assertTrue(any("HTTP 429 QuotaExceededError; retry 1 of" in w for w in t["warnings"]),
                        t["warnings"])
        reqs = up.ctl("stats")["vt_requests"]
        self.assertEqual([(q["path"].rsplit("/", 1)[1], q["status"]) for q in reqs],
                         [(SHA_A, 200), (SHA_B, 429), (SHA_B, 200), ("haiku-os.org", 200)])
        # the retry waited for Retry-After
        self.assertGreaterEqual(reqs[2]["t"] - reqs[1]["t"], 0.9)
        self.assertEqual(len(quota_lines(t)), 1, t["warnings"])
        self.assertEqual(len(pacing_lines(t)), 1, t["warnings"])

    def test_pacing_said_once_and_each_429_on_its_own_line(self):
        targets = [SHA_A, SHA_B, "haiku-os.org", "198.51.100.7"]
        up = self.vt_feed(targets, rpm=1000)
        # requests 1 and 3 (SHA_B's and haiku-os.org's first tries) get a 429
        up.ctl("faults", {"status": {"page": [1, 3], "code": 429, "retry_after": 1}})
        t = self.run_feed("v")
        self.assertEqual(t["status"], "completed", t)
        self.assertEqual(t["progress"]["indicators_created"], 4)
        statuses = [q["status"] for q in up.ctl("stats")["vt_requests"]]
        self.assertEqual(statuses, [200, 429, 200, 429, 200, 200])
        self.assertEqual(pacing_lines(t), [
            "paced at 1000 requests/min (options.requests_per_minute): 4 lookups take about 1 s"])
        quota = quota_lines(t)
        self.assertEqual(len(quota), 2, t["warnings"])
        self.assertIn("lookup 2 of 4 (%s): HTTP 429 QuotaExceededError; retry 1 of 5 in 1 s"
                      % SHA_B, quota)
        self.assertIn("lookup 3 of 4 (haiku-os.org): HTTP 429 QuotaExceededError; retry 1 of 5 "
                      "in 1 s", quota)
        self.assertEqual(len(t["warnings"]), 3, t["warnings"])

    def test_one_lookup_is_not_paced(self):
        self.vt_feed([SHA_A])
        t = self.run_feed("v")
        self.assertEqual(t["status"], "completed", t)
        self.assertEqual(t["warnings"], [])

    def test_server_quota_with_retry_after(self):
        # the upstream's own budget: 2 per minute → the third lookup gets a 429
        # QuotaExceededError whose Retry-After says when the window frees
        up = self.vt_feed([SHA_A, SHA_B, "haiku-os.org"], "--vt-rpm", "2")
        task = self.env.consume("v")
        # (the budget's own short waits are rate_limited too: wait for the 429's)
        t = self.env.wait(task, {"running"} | TERMINAL, timeout=60,
                          pred=lambda t: (t["message"] or "").startswith("rate limited by VirusTotal")
                          or t["status"] in TERMINAL)
        self.assertEqual(t["status"], "running", t)
        self.assertEqual(t["stage"], "rate_limited", t)
        self.assertEqual(t["progress"]["pages_done"], 2)
        self.assertIn("HTTP 429 QuotaExceededError; retry 1 of 5 in", " ".join(t["warnings"]))
        self.env.cancel(task)
        t = self.env.wait(task, TERMINAL, timeout=20)
        self.assertEqual(t["status"], "stopped", t)
        self.assertEqual(len(lines(self.env.export("v"))), 2)

    def test_bad_key_fails(self):
        self.vt_feed([SHA_A], secret="bad")
        t = self.run_feed("v")
        self.assertEqual(t["status"], "failed", t)
        self.assertIn("API key rejected (HTTP 401 WrongCredentialsError: Wrong API key)", t["error"])
        self.assertEqual(self.env.export("v"), "")

    def test_no_targets_fails_clearly(self):
        self.vt_feed(None)
        t = self.run_feed("v")
        self.assertEqual(t["status"], "failed", t)
        self.assertIn("no targets configured", t["error"])

    def test_without_targets_looks_up_the_stores_indicators(self):
        up = self.vt_feed(None, "--objects", "30")
        self.env.add_feed("t", up)                       # a TAXII feed on the same upstream
        self.assertEqual(self.run_feed("t")["status"], "completed")
        wanted = sorted({o["value"] for r in lines(self.env.export("t")) for o in r["observables"]
                         if o["type"] in ("ipv4-addr", "ipv6-addr", "domain-name", "url",
                                          "file:hashes.MD5", "file:hashes.SHA-256")})
        self.assertTrue(wanted)
        t = self.run_feed("v", timeout=120)
        self.assertEqual(t["status"], "completed", t)
        looked_up = sorted(r["value"] for r in lines(self.env.export("v")))
        self.assertEqual(looked_up, wanted)

    def test_wrong_field_types_skip_the_target(self):
        up = self.vt_feed([SHA_A, SHA_B, "haiku-os.org"])
        up.ctl("faults", {"wrong_types": {"page": 1, "variant": "fields"}})
        t = self.run_feed("v")
        self.assertEqual(t["status"], "completed", t)
        self.assertEqual(t["progress"]["pages_done"], 3)
        self.assertEqual([r["id"] for r in lines(self.env.export("v"))],
                         ["vt:domains:haiku-os.org", "vt:files:" + SHA_A])
        self.assertTrue(any(SHA_B in w and "malformed answer" in w for w in t["warnings"]),
                        t["warnings"])


class VirusTotalHostile(FeedTest):
    """The first lookup is good; the fault hits the second: the run fails with
    a clear error, the first lookup stays and nothing of the second is kept."""

    def run_with(self, faults, expect_in_error):
        up = self.vt_feed([SHA_A, SHA_B, "haiku-os.org"])
        for v in faults.values():
            if isinstance(v, dict) and "page" not in v:
                v["page"] = 1
        up.ctl("faults", faults)
        t = self.run_feed("v")
        self.assertEqual(t["status"], "failed", t)
        self.assertIn(expect_in_error.lower(), t["error"].lower(), t)
        self.assertEqual([r["id"] for r in lines(self.env.export("v"))], ["vt:files:" + SHA_A])
        self.assertEqual(t["progress"]["pages_done"], 1)
        return t

    def test_html(self):
        self.run_with({"html": {}}, "lookup 2 of 3 (%s): expected VirusTotal JSON" % SHA_B)

    def test_bad_json(self):
        self.run_with({"bad_json": {}}, "invalid JSON")

    def test_huge(self):
        self.run_with({"huge": {"bytes": 40 * 1024 * 1024}}, "larger than")

    def test_deep(self):
        self.run_with({"deep": {"depth": 10000}}, "invalid JSON")

    def test_invalid_utf8(self):
        self.run_with({"invalid_utf8": {}}, "invalid JSON")

    def test_wrong_envelope(self):
        self.run_with({"wrong_types": {"variant": "envelope"}}, "expected {\"data\"")

    def test_redirect_to_other_scheme(self):
        self.run_with({"redirect": {"location": "ftp://127.0.0.1/x"}}, "redirect")

    def test_forbidden(self):
        self.run_with({"status": {"code": 403}}, "access denied (HTTP 403 ForbiddenError")

    def test_html_404_is_not_a_result(self):
        self.run_with({"status": {"code": 404, "html": True}}, "not a VirusTotal NotFoundError")

    def test_server_error_after_retries(self):
        t = self.run_with({"status": {"code": 503, "times": -1, "retry_after": 0}},
                          "HTTP 503 TransientError, still after 5 retries")
        self.assertTrue(any("retry 5 of 5" in w for w in t["warnings"]), t["warnings"])


# ---- a scripted OTX server: what the test upstream cannot serve --------------------------

class StubOtx:
    """Serves scripted pages: routes[(path, page)] = (status, body or callable(stub)),
    `page` being the query's page parameter ("1" when absent). Logs every request."""

    def __init__(self):
        stub = self
        self.routes, self.log = {}, []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path, _, query = self.path.partition("?")
                q = urllib.parse.parse_qs(query)
                stub.log.append({"path": path, "query": {k: v[0] for k, v in q.items()},
                                 "key": self.headers.get("X-OTX-API-KEY")})
                status, body = stub.routes.get((path, q.get("page", ["1"])[0]),
                                               (404, {"detail": "Not found."}))
                data = json.dumps(body(stub) if callable(body) else body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.base = "http://127.0.0.1:%d" % self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def pulse(pid, modified, indicators, more=False):
    return {"id": pid, "name": "pulse " + pid, "tlp": "green", "tags": ["t"], "created": modified,
            "modified": modified, "indicators": indicators, "more_indicators": more}


def indicator(iid, value, kind="IPv4", **extra):
    d = {"id": iid, "indicator": value, "type": kind, "created": "2023-01-01T00:00:00",
         "expiration": None, "is_active": 1, "role": None}
    d.update(extra)
    return d


SUBSCRIBED = "/api/v1/pulses/subscribed"


class OtxScripted(FeedTest):
    def setUp(self):
        super().setUp()
        self.stub = StubOtx()

    def tearDown(self):
        self.stub.close()
        super().tearDown()

    def feed(self):
        self.env.add_feed("s", types.SimpleNamespace(url=self.stub.base), type="otx", url=self.stub.base, collection=None,
                          secret="stub-key", options={"page_size": 2})

    def page(self, results, next_page=None, count=None):
        nxt = "%s%s?limit=2&page=%d" % (self.stub.base, SUBSCRIBED, next_page) if next_page else None
        return {"count": count, "next": nxt, "previous": None, "results": results}

    def test_more_indicators_are_fetched_and_paged(self):
        p = pulse("aaaa01", "2023-08-22T09:00:00", [indicator(1, "192.0.2.1")], more=True)
        ind = "/api/v1/pulses/aaaa01/indicators"
        self.stub.routes[(SUBSCRIBED, "1")] = (200, self.page([p], count=1))
        self.stub.routes[(ind, "1")] = (200, {
            "count": 5, "previous": None, "results": [
                indicator(1, "192.0.2.1"), indicator(2, "bad.example", "domain")],
            "next": self.stub.base + ind + "?limit=1000&page=2"})
        self.stub.routes[(ind, "2")] = (200, {
            "count": 5, "next": None, "previous": None, "results": [
                indicator(3, "http://bad.example/x", "URL"),
                indicator(4, "old.example", "domain", is_active=0),
                indicator(5, "gone.example", "domain", expiration="2020-01-01T00:00:00")]})
        self.feed()
        t = self.run_feed("s")
        self.assertEqual(t["status"], "completed", t)
        self.assertEqual(t["progress"]["objects_processed"], 1)
        self.assertEqual(t["progress"]["indicators_created"], 3)
        self.assertEqual(t["progress"]["indicators_skipped"], 2)   # inactive + expired
        self.assertIn("page 1: 2 indicators skipped (1 inactive, 1 expired)", t["warnings"])
        self.assertEqual(sorted(r["id"] for r in lines(self.env.export("s"))),
                         ["otx:aaaa01:1", "otx:aaaa01:2", "otx:aaaa01:3"])
        self.assertEqual([(q["path"], q["query"].get("page")) for q in self.stub.log],
                         [(SUBSCRIBED, None), (ind, None), (ind, "2")])
        self.assertTrue(all(q["key"] == "stub-key" for q in self.stub.log))

    def test_next_to_another_host_fails_before_the_page_is_kept(self):
        p = pulse("aaaa01", "2023-08-22T09:00:00", [indicator(1, "192.0.2.1")])
        page = self.page([p], count=2)
        page["next"] = "http://localhost:%d%s?page=2" % (self.stub.server.server_port, SUBSCRIBED)
        self.stub.routes[(SUBSCRIBED, "1")] = (200, page)
        self.feed()
        t = self.run_feed("s")
        self.assertEqual(t["status"], "failed", t)
        self.assertIn("page 1: next leaves the feed's host", t["error"])
        self.assertEqual(self.env.export("s"), "")
        self.assertEqual(len(self.stub.log), 1)

    def test_relative_next_fails(self):
        page = self.page([], count=0)
        page["next"] = SUBSCRIBED + "?page=2"
        self.stub.routes[(SUBSCRIBED, "1")] = (200, page)
        self.feed()
        t = self.run_feed("s")
        self.assertEqual(t["status"], "failed", t)
        self.assertIn("next is not an absolute http(s) URL", t["error"])

    def test_newest_first_order_holds_the_cursor_until_the_last_page(self):
        # Pulses newest first: after page 1 the newest is committed but older
        # ones are not, so a cursor there would skip them after a stop. The
        # cursor must stay where it was until the whole run is committed.
        p1 = [pulse("bbbb04", "2023-08-25T00:00:00", [indicator(41, "192.0.2.41")]),
              pulse("bbbb03", "2023-08-24T00:00:00", [indicator(31, "192.0.2.31")])]
        p2 = [pulse("bbbb02", "2023-08-23T00:00:00", [indicator(21, "192.0.2.21")]),
              pulse("bbbb01", "2023-08-22T00:00:00", [indicator(11, "192.0.2.11")])]
        self.stub.routes[(SUBSCRIBED, "1")] = (200, self.page(p1, next_page=2, count=4))
        self.stub.routes[(SUBSCRIBED, "2")] = (403, {"detail": "Authentication required"})
        self.feed()
        t = self.run_feed("s")
        self.assertEqual(t["status"], "failed", t)
        self.assertIn("API key rejected (HTTP 403)", t["error"])
        self.assertEqual(t["progress"]["indicators_created"], 2)      # page 1 kept
        self.stub.log.clear()
        self.stub.routes[(SUBSCRIBED, "2")] = (200, self.page(p2, count=4))
        t = self.run_feed("s")
        self.assertEqual(t["status"], "completed", t)
        # no modified_since: page 1's cursor was never written
        self.assertNotIn("modified_since", self.stub.log[0]["query"])
        self.assertEqual(t["progress"]["indicators_created"], 2)
        self.assertEqual(t["progress"]["indicators_skipped"], 2)
        self.assertEqual(len(lines(self.env.export("s"))), 4)
        # the completed run wrote the newest pulse's time
        self.stub.log.clear()
        self.stub.routes[(SUBSCRIBED, "1")] = (200, self.page([], count=0))
        self.assertEqual(self.run_feed("s")["status"], "completed")
        self.assertEqual(self.stub.log[0]["query"]["modified_since"], "2023-08-25T00:00:00.000000")

    def test_percent_from_count(self):
        ps = [pulse("cccc%02d" % i, "2023-08-%02dT00:00:00" % (i + 1),
                    [indicator(i, "192.0.2.%d" % i)]) for i in range(5)]
        self.stub.routes[(SUBSCRIBED, "1")] = (200, self.page(ps[:2], next_page=2, count=5))
        self.stub.routes[(SUBSCRIBED, "2")] = (200, self.page(ps[2:4], next_page=3, count=5))
        self.stub.routes[(SUBSCRIBED, "3")] = (200, self.page(ps[4:], count=5))
        self.feed()
        t = self.run_feed("s")
        self.assertEqual(t["status"], "completed", t)
        self.assertEqual(t["progress"]["percent"], 100)
        self.assertEqual(t["progress"]["pages_done"], 3)
        self.assertEqual(t["progress"]["objects_processed"], 5)


# ---- the API key and redirects --------------------------------------------------------

class _Capture(BaseHTTPRequestHandler):
    seen = []

    def do_GET(self):
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        body = b'{"count":0,"next":null,"previous":null,"results":[]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class ApiKeyAndRedirects(FeedTest):
    def test_api_key_not_sent_to_another_host_on_redirect(self):
        """libcurl would follow a redirect with every custom header, so
        X-OTX-API-KEY (and VT's x-apikey) would reach whatever host a redirect
        names; fetch.c follows such redirects itself, same origin only."""
        _Capture.seen = []
        other = HTTPServer(("127.0.0.1", 0), _Capture)
        threading.Thread(target=other.serve_forever, daemon=True).start()
        try:
            up = self.otx_feed(secret="SECRET-OTX-KEY")
            up.ctl("faults", {"redirect": {"page": 0, "code": 302,
                                           "location": "http://127.0.0.1:%d/elsewhere"
                                           % other.server_port}})
            self.run_feed("o")
        finally:
            other.shutdown()
            other.server_close()
        self.assertEqual([h for h in _Capture.seen if "x-otx-api-key" in h], [])


if __name__ == "__main__":
    unittest.main()
