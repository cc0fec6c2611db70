"""TAXII 2.1 as real servers do it (issue 12): a collection in any of the
discovery document's API roots, and one `next` token repeated for a whole
paging session, as the OASIS reference server hands it out."""
import unittest

from runenv import RunEnv, TERMINAL
from test_runs import RunTest, lines

PAGE = 100


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
