"""Roles and the audit trail (README "Roles", "Audit"; issue 15 §2) through a
real lighttpd and the FastCGI handler: named tokens (one stored hashed in the
config), REMOTE_USER from lighttpd's own mod_auth (Basic, with a user file
the test writes) mapped to roles, 403 forbidden_role, cancel.requested_by,
and GET /api/audit/ with its paging — including the CLI's writes and failed
authentication, and never a secret."""
import base64
import datetime
import hashlib
import json
import os
import pwd
import tempfile
import unittest

from stack import COLLECTION
from test_api import ApiCase, TokenStack, bin_dir

API_TOKEN = "adm1n-t0ken-for-audit"
OPS = "ops-t0ken-for-audit"
VIEW = "view-t0ken-for-audit"
BOSS = "boss-t0ken-for-audit"
FEED_SECRET = "feed-s3cret-for-audit"
PASSWORDS = {"carol": "carol-pw-for-audit", "olga": "olga-pw-for-audit",
             "mallory": "mallory-pw-for-audit"}
SECRETS = [API_TOKEN, OPS, VIEW, BOSS, FEED_SECRET] + list(PASSWORDS.values())


def bearer(token):
    return {"Authorization": "Bearer " + token}


def basic(user):
    raw = ("%s:%s" % (user, PASSWORDS[user])).encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


# lighttpd authenticates Basic requests itself (and sets REMOTE_USER); Bearer
# requests go to the handler untouched: a site with SSO for people and
# tokens for scripts.
LIGHTTPD_AUTH = """
server.modules += ( "mod_auth", "mod_authn_file" )
auth.backend = "plain"
auth.backend.plain.userfile = "%s"
$HTTP["url"] =^ "/api/" {
  $REQUEST_HEADER["Authorization"] =^ "Basic " {
    auth.require = ( "" => ( "method" => "basic", "realm" => "threatfeed",
                             "require" => "valid-user" ) )
  }
}
"""


class RolesStack(TokenStack):
    pass


class Roles(ApiCase):
    conf = {
        "api_token": API_TOKEN,
        "token.ops": "operator " + OPS,
        "token.viewer": "viewer sha256:" + hashlib.sha256(VIEW.encode()).hexdigest(),
        "token.boss": "admin " + BOSS,
        "trust_remote_user": 1,
        "remote_user.carol": "viewer",
        "remote_user.olga": "operator",
        "remote_user_role": "none",
        "grace_period_s": 1,
    }
    auth = bearer(BOSS)
    stack_class = RolesStack

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="tf-audit-")
        users = os.path.join(cls.tmp.name, "users")
        with open(users, "w") as f:
            for u, p in PASSWORDS.items():
                f.write("%s:%s\n" % (u, p))
        inc = os.path.join(cls.tmp.name, "auth.conf")
        with open(inc, "w") as f:
            f.write(LIGHTTPD_AUTH % users)
        os.chmod(cls.tmp.name, 0o755)
        for p in (users, inc):
            os.chmod(p, 0o644)
        cls.stack = cls.stack_class("lighttpd", bin_dir=bin_dir(), conf=cls.conf,
                                    upstream_args=cls.upstream_args, fcgi_procs=cls.fcgi_procs,
                                    env={"TF_INCLUDE": inc})
        cls.stack.start()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.tmp.cleanup()

    # -- helpers -------------------------------------------------------------
    def as_(self, who, status, method, path, body=None, code=None):
        hdrs = basic(who) if who in PASSWORDS else bearer(who)
        got, _, data = self.req(method, path, body=body, headers=hdrs, auth=False)
        self.assertEqual(got, status, (who, method, path, data))
        if code:
            self.assertEqual(data["code"], code, data)
        return data

    def audit(self, limit=1000):
        _, data = self.expect(200, "GET", "/api/audit/?limit=%d" % limit)
        return data["entries"]

    def find(self, **match):
        return [e for e in self.audit() if all(e.get(k) == v for k, v in match.items())]

    def active_run(self, feed_id, who=OPS):
        self.new_feed(feed_id)
        data = self.as_(who, 202, "POST", "/api/threat-feeds/%s/consume/" % feed_id)
        return data["task_id"]

    # -- roles ---------------------------------------------------------------
    def test_viewer_reads_but_may_not_write(self):
        self.new_feed("v-feed")
        self.as_(VIEW, 200, "GET", "/api/threat-feeds/")
        self.as_(VIEW, 200, "GET", "/api/threat-feeds/v-feed/")
        data = self.as_(VIEW, 403, "POST", "/api/threat-feeds/",
                        self.stack.demo_feed("v-new"), code="forbidden_role")
        self.assertIn("viewer", data["error"])
        self.assertIn("admin", data["error"])
        self.as_(VIEW, 403, "POST", "/api/threat-feeds/v-feed/consume/", code="forbidden_role")
        self.as_(VIEW, 403, "POST", "/api/threat-feeds/v-feed/test_connection/",
                 code="forbidden_role")
        self.as_(VIEW, 403, "GET", "/api/audit/", code="forbidden_role")
        # nothing happened
        self.as_(VIEW, 404, "GET", "/api/threat-feeds/v-new/")
        _, feed = self.expect(200, "GET", "/api/threat-feeds/v-feed/")
        self.assertIsNone(feed.get("active_task_id"), feed)

    def test_operator_runs_but_may_not_change_feeds(self):
        task_id = self.active_run("o-feed")
        data = self.as_(OPS, 202, "POST", "/api/threat-feeds/o-feed/cancel_consumption/",
                        {"mode": "cancel_job"})
        self.assertEqual(data["cancel"]["requested_by"], "ops")
        self.assertEqual(data["cancel"]["mode"], "cancel_job")
        self.wait(task_id)
        self.as_(OPS, 403, "POST", "/api/threat-feeds/", self.stack.demo_feed("o-new"),
                 code="forbidden_role")
        self.as_(OPS, 403, "PATCH", "/api/threat-feeds/o-feed/", {"name": "x"},
                 code="forbidden_role")
        self.as_(OPS, 403, "DELETE", "/api/threat-feeds/o-feed/", code="forbidden_role")
        self.as_(OPS, 403, "DELETE", "/api/threat-feeds/tasks/", code="forbidden_role")
        self.as_(OPS, 403, "GET", "/api/audit/", code="forbidden_role")
        # and by task id
        task_id = self.as_(OPS, 202, "POST", "/api/threat-feeds/o-feed/consume/")["task_id"]
        data = self.as_(OPS, 202, "POST", "/api/threat-feeds/cancel-task/%s/" % task_id,
                        {"mode": "stop_now"})
        self.assertEqual(data["cancel"]["requested_by"], "ops")
        self.wait(task_id)

    def test_admin_does_everything(self):
        self.as_(BOSS, 201, "POST", "/api/threat-feeds/", self.stack.demo_feed("a-feed"))
        self.as_(BOSS, 200, "PATCH", "/api/threat-feeds/a-feed/", {"name": "renamed"})
        task_id = self.as_(BOSS, 202, "POST", "/api/threat-feeds/a-feed/consume/")["task_id"]
        data = self.as_(BOSS, 202, "POST", "/api/threat-feeds/cancel-task/%s/" % task_id, {})
        self.assertEqual(data["cancel"]["requested_by"], "boss")
        self.wait(task_id)
        self.as_(BOSS, 200, "DELETE", "/api/threat-feeds/tasks/")
        self.as_(BOSS, 204, "DELETE", "/api/threat-feeds/a-feed/")
        self.as_(BOSS, 200, "GET", "/api/audit/")
        # the single api_token of before roles is still an admin
        self.as_(API_TOKEN, 200, "GET", "/api/audit/")

    def test_remote_user_roles(self):
        self.new_feed("r-feed")
        self.as_("carol", 200, "GET", "/api/threat-feeds/r-feed/")
        self.as_("carol", 403, "POST", "/api/threat-feeds/r-feed/consume/", code="forbidden_role")
        task_id = self.as_("olga", 202, "POST", "/api/threat-feeds/r-feed/consume/")["task_id"]
        data = self.as_("olga", 202, "POST", "/api/threat-feeds/r-feed/cancel_consumption/", {})
        self.assertEqual(data["cancel"]["requested_by"], "olga")
        self.wait(task_id)
        self.as_("olga", 403, "POST", "/api/threat-feeds/", self.stack.demo_feed("r-new"),
                 code="forbidden_role")
        # authenticated by the web server but given no role
        self.as_("mallory", 403, "GET", "/api/threat-feeds/", code="forbidden_role")
        # a client cannot claim a user: without lighttpd's auth there is none
        status, _, _ = self.req("GET", "/api/threat-feeds/", auth=False,
                                headers={"Remote-User": "carol"})
        self.assertEqual(status, 401)

    # -- audit ---------------------------------------------------------------
    def test_audit_records_who_when_where_outcome(self):
        started = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)
        task_id = self.active_run("au-feed")
        self.as_(OPS, 202, "POST", "/api/threat-feeds/au-feed/cancel_consumption/",
                 {"mode": "cancel_job"})
        self.wait(task_id)
        self.as_(VIEW, 403, "POST", "/api/threat-feeds/au-feed/consume/")
        self.as_(BOSS, 409, "POST", "/api/threat-feeds/", self.stack.demo_feed("au-feed"))

        consume = self.find(action="feed_consume", feed_id="au-feed", who="ops", outcome="ok")
        self.assertEqual(len(consume), 1, consume)
        e = consume[0]
        self.assertEqual(e["task_id"], task_id)
        self.assertEqual(e["role"], "operator")
        self.assertEqual(e["address"], "127.0.0.1")
        self.assertEqual(e["status"], 202)
        self.assertEqual(e["via"], "api")
        when = datetime.datetime.fromisoformat(e["time"].replace("Z", "+00:00"))
        self.assertGreaterEqual(when, started)
        self.assertLessEqual(when, datetime.datetime.now(datetime.timezone.utc))

        cancel = self.find(action="feed_cancel", feed_id="au-feed", who="ops")
        self.assertEqual([(c["mode"], c["task_id"], c["outcome"]) for c in cancel],
                         [("cancel_job", task_id, "ok")])
        refused = self.find(action="feed_consume", feed_id="au-feed", who="viewer")
        self.assertEqual([(r["status"], r["outcome"], r["role"]) for r in refused],
                         [(403, "forbidden_role", "viewer")])
        created = self.find(action="feed_create", feed_id="au-feed", who="boss")
        self.assertEqual(sorted(c["status"] for c in created), [201, 409])
        self.assertIn("exists", [c["outcome"] for c in created])
        # newest first
        ids = [x["id"] for x in self.audit()]
        self.assertEqual(ids, sorted(ids, reverse=True))

    def test_failed_auth_is_audited(self):
        before = len(self.find(action="auth"))
        for headers in (bearer("not-a-token"), bearer(VIEW[:-1]), {}):
            status, _, _ = self.req("POST", "/api/threat-feeds/x/consume/", auth=False,
                                    headers=headers)
            self.assertEqual(status, 401)
        failed = self.find(action="auth")
        self.assertEqual(len(failed) - before, 3)
        for e in failed[:3]:
            self.assertEqual((e["status"], e["outcome"], e["who"], e["role"]),
                             (401, "unauthorized", "anonymous", "none"))
            self.assertEqual(e["address"], "127.0.0.1")

    def test_no_secret_in_audit(self):
        self.new_feed("s-feed", username="reader", secret=FEED_SECRET)
        self.as_(BOSS, 200, "PATCH", "/api/threat-feeds/s-feed/", {"secret": FEED_SECRET + "2"})
        for tok in (OPS + "x", VIEW, BOSS[:-1]):
            self.req("GET", "/api/threat-feeds/?token=" + tok, auth=False, headers=bearer(tok))
        self.as_("carol", 403, "DELETE", "/api/threat-feeds/s-feed/")
        self.cli("feed", "rm", "no-such-feed")
        text = json.dumps(self.audit())
        self.assertIn("s-feed", text)      # the writes are there ...
        for s in SECRETS + [OPS + "x", BOSS[:-1], FEED_SECRET + "2",
                            hashlib.sha256(VIEW.encode()).hexdigest()]:
            self.assertNotIn(s, text)      # ... their secrets are not

    def test_audit_pages(self):
        for _ in range(7):
            self.req("GET", "/api/health", auth=False, headers=bearer("wrong"))
        everything = [e["id"] for e in self.audit()]
        self.assertGreaterEqual(len(everything), 7)
        seen, cursor, pages = [], None, 0
        while True:
            q = "?limit=3" + ("&cursor=" + cursor if cursor else "")
            _, page = self.expect(200, "GET", "/api/audit/" + q)
            self.assertLessEqual(len(page["entries"]), 3)
            seen.extend(e["id"] for e in page["entries"])
            cursor = page["next_cursor"]
            pages += 1
            if not cursor:
                break
            self.assertLess(pages, 1000)
        # entries written while paging (our own reads are not audited) would
        # only be newer: the walk is the list as it was
        self.assertEqual(seen, everything[:len(seen)])
        self.assertEqual(seen, everything)
        self.expect(400, "GET", "/api/audit/?cursor=abc", code="invalid_parameter")
        self.expect(400, "GET", "/api/audit/?limit=0", code="invalid_parameter")

    def test_cli_is_named_and_audited(self):
        r = self.cli("feed", "add", "--id", "c-feed", "--name", "CLI feed", "--type", "taxii21",
                     "--url", self.stack.upstream_url, "--collection", COLLECTION)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.cli("consume", "c-feed")
        self.assertEqual(r.returncode, 0, r.stderr)
        task_id = json.loads(r.stdout)["task_id"]
        r = self.cli("cancel", task_id, "--mode", "cancel_job")
        self.assertEqual(r.returncode, 0, r.stderr)
        who = "cli:" + pwd.getpwuid(os.geteuid()).pw_name
        self.assertEqual(json.loads(r.stdout)["cancel"]["requested_by"], who)
        self.wait(task_id)
        e = self.find(action="task_cancel", task_id=task_id)
        self.assertEqual([(x["who"], x["via"], x["mode"], x["outcome"], x["address"]) for x in e],
                         [(who, "cli", "cancel_job", "ok", "local")])
        made = self.find(feed_id="c-feed", via="cli")
        self.assertEqual([(x["action"], x["status"], x["task_id"]) for x in made],
                         [("task_cancel", 202, task_id), ("feed_consume", 202, task_id),
                          ("feed_create", 201, None)])

    def cli(self, *args):
        return self.stack.cli(*args)


if __name__ == "__main__":
    unittest.main()
