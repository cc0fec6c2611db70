"""The Debian package (issue 15 §5) the way an administrator meets it:
`make deb`, lintian, `dpkg -i`, the files, the `threatfeed` user, the
systemd units (`systemd-analyze verify`; systemd need not be PID 1), the
installed programs run as their units run them — a whole feed run started
through the installed handler on a socket handed over on fd 0 as systemd's
StandardInput=socket does —, `dpkg -r` keeping the store and the edited
config, and `dpkg --purge` leaving the machine as it was.

Needs root (it installs a package): skipped otherwise.  It refuses to start
(an error, not a skip) where a threatfeed package, a `threatfeed` user or
/var/lib/threatfeed already exists: its purge would delete them.

Run: python3 tests/pyrun.py tests/integration test_deb   (as root)
"""

import grp
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from runenv import COLLECTION, REPO, TERMINAL, UPSTREAM  # noqa: E402

PKG = "threatfeed"
BUILD = os.path.join(REPO, os.environ.get("BUILD", "build"))
UNIT_DIR = "/lib/systemd/system"
CONF = "/etc/threatfeed/threatfeed.conf"
STATE = "/var/lib/threatfeed"
# enabled on install like dh_installsystemd does; the agent is not
ENABLED = {"threatfeed-fcgi.socket": "sockets.target.wants",
           "threatfeed-tick.timer": "timers.target.wants",
           "threatfeed-gc.timer": "timers.target.wants"}
ACCOUNT_FILES = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow")
# where a package, its maintainer scripts or systemd could leave anything
SNAPSHOT_ROOTS = ("/etc", "/usr", "/lib/systemd", "/var/lib", "/var/cache", "/var/log", "/run")


def sh(cmd, check=True, timeout=120, **kw):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise AssertionError("%s: exit %d\n%s%s" % (" ".join(cmd), res.returncode,
                                                   res.stdout[-3000:], res.stderr[-3000:]))
    return res


def dpkg(*args):
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return sh(["dpkg"] + list(args), env=env)


def pkg_status():
    """'ii' installed, 'rc' removed with its config kept, '' unknown to dpkg."""
    res = sh(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", PKG], check=False)
    return res.stdout.strip() if res.returncode == 0 else ""


def snapshot():
    names = set()
    for root in SNAPSHOT_ROOTS:
        for d, dirs, files in os.walk(root):
            names.update(os.path.join(d, n) for n in dirs + files if "threatfeed" in n)
    accounts = {}
    for p in ACCOUNT_FILES:
        with open(p) as f:
            accounts[p] = f.read()
    return names, accounts


def unit(name):
    """An installed unit's settings: {key: [values in order]}."""
    keys = {}
    with open(os.path.join(UNIT_DIR, name)) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", "[")) and "=" in line:
                k, v = line.split("=", 1)
                keys.setdefault(k, []).append(v)
    return keys


def as_unit(name, *extra, **popen_kw):
    """The unit's ExecStart (plus extra arguments) as its User/Group, with
    only its Environment= and its UMask, as systemd would start it."""
    u = unit(name)
    env = {"PATH": "/usr/bin:/bin"}
    for e in u.get("Environment", []):
        k, v = e.split("=", 1)
        env[k] = v
    umask = int(u.get("UMask", ["0022"])[-1], 8)
    argv = ["setpriv", "--reuid", u["User"][-1], "--regid", u["Group"][-1], "--init-groups",
            "--"] + shlex.split(u["ExecStart"][-1]) + list(extra)
    return subprocess.Popen(argv, env=env, preexec_fn=lambda: os.umask(umask), **popen_kw)


def run_unit(name, *extra, timeout=60):
    proc = as_unit(name, *extra, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError("%s %s: exit %d: %s" % (name, " ".join(extra), proc.returncode, err))
    return out


def cli(*args):
    """The installed CLI with the tick timer's service settings (its user,
    environment and config), as an administrator is told to run it."""
    u = unit("threatfeed-tick.service")
    env = {"PATH": "/usr/bin:/bin"}
    env.update(e.split("=", 1) for e in u["Environment"])
    return sh(["setpriv", "--reuid", u["User"][-1], "--regid", u["Group"][-1], "--init-groups",
               "--", "/usr/bin/threatfeed"] + list(args), env=env).stdout


def fcgi(sock, method, uri, body=b""):
    """One request to a FastCGI responder with libfcgi's own client, cgi-fcgi."""
    env = {"PATH": "/usr/bin:/bin", "REQUEST_METHOD": method, "REQUEST_URI": uri,
           "SCRIPT_NAME": "", "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1",
           "GATEWAY_INTERFACE": "CGI/1.1", "HTTP_HOST": "localhost",
           "SERVER_NAME": "localhost", "SERVER_PORT": "80", "REMOTE_ADDR": "127.0.0.1",
           "CONTENT_LENGTH": str(len(body))}
    if body:
        env["CONTENT_TYPE"] = "application/json"
    res = subprocess.run(["cgi-fcgi", "-bind", "-connect", sock], input=body, env=env,
                         capture_output=True, timeout=30)
    head, _, payload = res.stdout.partition(b"\r\n\r\n")
    m = re.search(rb"^Status: (\d+)", head, re.M)
    if not m:
        raise AssertionError("no FastCGI answer to %s %s: %r %r" % (method, uri, res.stdout[:500],
                                                                    res.stderr[:500]))
    return int(m.group(1)), json.loads(payload) if payload else None


def package_of(path):
    """The package that owns a file, under whichever name dpkg knows it
    (/lib or /usr/lib on a merged-/usr system, the symlink or its target)."""
    tried = []
    for p in (path, os.path.realpath(path)):
        for q in (p, p[4:] if p.startswith("/usr/") else "/usr" + p):
            res = sh(["dpkg", "-S", q], check=False)
            if res.returncode == 0:
                return res.stdout.split(":")[0]
            tried.append(q)
    raise AssertionError("no package owns %s" % " or ".join(tried))


def troff_headings(path, section):
    """The first words of the `.TP` headings in one section of a man page."""
    with open(path) as f:
        text = f.read().replace("\\-", "-")
    part = text.split(".SH %s\n" % section, 1)[1].split("\n.SH ", 1)[0]
    return [re.sub(r"\\f.", "", m).split() for m in re.findall(r"^\.TP\n\.B (.*)$", part, re.M)]


class DebianPackage(unittest.TestCase):
    deb = None

    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            return  # each test skips (and is counted), see setUp
        in_the_way = [what for what, there in (
            ("the package %s (dpkg: %s)" % (PKG, pkg_status()), pkg_status() != ""),
            ("a user %s" % PKG, subprocess.run(["getent", "passwd", PKG],
                                              capture_output=True).returncode == 0),
            (STATE, os.path.lexists(STATE))) if there]
        if in_the_way:
            raise AssertionError("refusing to run: %s already on this machine, and this test's "
                                 "purge would remove it" % ", ".join(in_the_way))
        with open(os.path.join(REPO, "VERSION")) as f:
            cls.version = f.read().strip()
        arch = sh(["dpkg", "--print-architecture"]).stdout.strip()
        # lintian runs in its own test below, not twice
        sh(["make", "-s", "--no-print-directory", "-C", REPO, "deb", "BUILD=" + BUILD],
           env=dict(os.environ, LINTIAN="0"), timeout=600)
        cls.deb = os.path.join(BUILD, "%s_%s_%s.deb" % (PKG, cls.version, arch))
        if not os.path.isfile(cls.deb):
            raise AssertionError("make deb did not build %s" % cls.deb)

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("needs root: it installs and purges the package with dpkg")

    def test_lintian(self):
        res = sh(["lintian", "--no-tag-display-limit", self.deb], check=False, timeout=300)
        report = [l for l in (res.stdout + res.stderr).splitlines()
                  if re.match(r"^[EW]: ", l)]
        errors = [l for l in report if l.startswith("E: ")]
        self.assertEqual(errors, [], "lintian:\n" + "\n".join(report))
        # exit 0 without E: lines; warnings are printed, not fatal
        self.assertIn(res.returncode, (0, 2), res.stderr)
        for l in report:
            print("lintian:", l)

    # ---- the life cycle ------------------------------------------------------

    def test_install_use_remove_purge(self):
        before = snapshot()
        self.addCleanup(self.purge_if_left)
        dpkg("-i", self.deb)
        self.assertEqual(pkg_status(), "ii")
        self.check_files()
        self.check_depends()
        self.check_user()
        self.check_units()
        self.check_programs()
        self.check_run_through_handler()

        # remove: programs go; the store, the (edited) config and the user stay
        with open(CONF, "a") as f:
            f.write("history_keep = 7\n")
        dpkg("-r", PKG)
        self.assertEqual(pkg_status(), "rc")
        for gone in ("/usr/bin/threatfeed", "/usr/lib/threatfeed/threatfeed.fcgi",
                     os.path.join(UNIT_DIR, "threatfeed-fcgi.service")):
            self.assertFalse(os.path.lexists(gone), gone)
        self.assertTrue(os.path.isfile(os.path.join(STATE, "db", "data.mdb")))
        self.assertIn("history_keep = 7", open(CONF).read())
        pwd.getpwnam(PKG)

        # installed again: the feed and its records are there, the edit kept
        dpkg("-i", self.deb)
        self.assertEqual(len(cli("export", "deb").splitlines()), 1000)
        self.assertIn("history_keep = 7", open(CONF).read())
        self.check_conf_mode()

        dpkg("--purge", PKG)
        self.assertEqual(pkg_status(), "")
        after = snapshot()
        self.assertEqual(sorted(after[0] - before[0]), [], "left behind by the purge")
        self.assertEqual(sorted(before[0] - after[0]), [], "removed by the purge")
        for p in ACCOUNT_FILES:
            self.assertEqual(after[1][p], before[1][p], p)

    def purge_if_left(self):
        if pkg_status():
            subprocess.run(["dpkg", "--purge", PKG], capture_output=True, timeout=120,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))

    # ---- the steps -------------------------------------------------------------

    def check_files(self):
        for path in ("/usr/bin/threatfeed", "/usr/bin/threatfeed-worker",
                     "/usr/lib/threatfeed/threatfeed.fcgi"):
            st = os.stat(path)
            self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (0, 0o755), path)
        # the dashboard and the deploy examples, byte for byte
        for src_dir, dst_dir in (("www", "/usr/share/threatfeed/www"),
                                 ("deploy", "/usr/share/doc/threatfeed/deploy")):
            for d, _, files in os.walk(os.path.join(REPO, src_dir)):
                for n in files:
                    src = os.path.join(d, n)
                    dst = os.path.join(dst_dir, os.path.relpath(src, os.path.join(REPO, src_dir)))
                    with open(src, "rb") as a, open(dst, "rb") as b:
                        self.assertEqual(a.read(), b.read(), dst)
        for page in ("man1/threatfeed.1.gz", "man1/threatfeed-worker.1.gz",
                     "man8/threatfeed.fcgi.8.gz"):
            res = sh(["man", "--warnings", "-l", "/usr/share/man/" + page],
                     env=dict(os.environ, MANWIDTH="80", MAN_KEEP_FORMATTING=""))
            self.assertEqual(res.stderr, "", page)
            self.assertIn("threatfeed", res.stdout)
        for doc in ("copyright", "changelog.gz", "README.md"):
            self.assertTrue(os.path.isfile("/usr/share/doc/threatfeed/" + doc), doc)
        conffiles = sh(["dpkg-query", "-W", "-f=${Conffiles}", PKG]).stdout
        self.assertIn(CONF, conffiles)
        self.check_conf_mode()

    def check_conf_mode(self):
        st = os.stat(CONF)
        self.assertEqual((st.st_uid, grp.getgrgid(st.st_gid).gr_name, stat.S_IMODE(st.st_mode)),
                         (0, PKG, 0o640), "the config holds the API token")

    def check_depends(self):
        """Every library a binary links directly comes from a package that
        Depends names (found on this machine, not written down here)."""
        depends = sh(["dpkg-query", "-W", "-f=${Depends}", PKG]).stdout
        named = {re.split(r"[ (]", d.strip())[0] for d in depends.split(",")}
        for binary in ("/usr/bin/threatfeed", "/usr/bin/threatfeed-worker",
                       "/usr/lib/threatfeed/threatfeed.fcgi"):
            needed = re.findall(r"NEEDED\s+(\S+)", sh(["objdump", "-p", binary]).stdout)
            resolved = dict(re.findall(r"^\s*(\S+) => (\S+)", sh(["ldd", binary]).stdout, re.M))
            self.assertTrue(needed, binary)
            for lib in needed:
                owner = package_of(resolved[lib])
                self.assertIn(owner, named, "%s needs %s (%s)" % (binary, lib, owner))

    def check_user(self):
        pw = pwd.getpwnam(PKG)
        self.assertLess(pw.pw_uid, 1000, "a system user")
        self.assertEqual(pw.pw_dir, STATE)
        self.assertEqual(pw.pw_shell, "/usr/sbin/nologin")
        self.assertEqual(grp.getgrgid(pw.pw_gid).gr_name, PKG)
        st = os.stat(STATE)
        self.assertEqual((pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name,
                          stat.S_IMODE(st.st_mode)), (PKG, PKG, 0o770))

    def check_units(self):
        units = sorted(n for n in os.listdir(UNIT_DIR) if n.startswith("threatfeed"))
        self.assertEqual(units, sorted(
            os.path.basename(p) for p in os.listdir(os.path.join(REPO, "deploy", "systemd"))))
        res = sh(["systemd-analyze", "verify"] + [os.path.join(UNIT_DIR, n) for n in units])
        self.assertEqual(res.stderr.strip(), "", "systemd-analyze verify")
        for n in units:
            text = open(os.path.join(UNIT_DIR, n)).read()
            self.assertNotIn("/usr/local", text, n)
            u = unit(n)
            if n.endswith(".service"):
                self.assertEqual(u["User"], [PKG], n)
                self.assertIn("THREATFEED_CONF=" + CONF, u["Environment"], n)
                self.assertTrue(os.access(shlex.split(u["ExecStart"][0])[0], os.X_OK), n)
        self.assertEqual(unit("threatfeed-agent.service")["ExecStart"], ["/usr/bin/threatfeed agent"])
        sock = unit("threatfeed-fcgi.socket")
        self.assertEqual((sock["SocketUser"], sock["SocketGroup"]), ([PKG], ["www-data"]))
        # enabled: the socket and the timers; never the agent
        links = {}
        for d, dirs, files in os.walk("/etc/systemd/system"):
            for n in files + dirs:
                p = os.path.join(d, n)
                if "threatfeed" in n and os.path.islink(p):
                    links[n] = (os.path.basename(d), os.readlink(p))
        self.assertEqual(links, {n: (wants, os.path.join(UNIT_DIR, n))
                                 for n, wants in ENABLED.items()})

    def check_programs(self):
        res = sh(["/usr/bin/threatfeed", "--help"])
        commands = [l.split()[1] for l in res.stdout.splitlines() if l.startswith("  threatfeed ")]
        self.assertIn("tick", commands)
        feed_cmds = [l.split()[2] for l in sh(["/usr/bin/threatfeed", "feed", "--help"]).stdout
                     .splitlines() if l.startswith("  threatfeed feed ")]
        # the man page describes exactly the commands the binary has
        man = troff_headings(os.path.join(REPO, "man", "threatfeed.1"), "COMMANDS")
        self.assertEqual(sorted({h[0] for h in man}), sorted(commands), "threatfeed(1) commands")
        self.assertEqual(sorted(h[1] for h in man if h[0] == "feed"), sorted(feed_cmds))
        self.assertEqual(sh(["/usr/bin/threatfeed", "--version"]).stdout.split(),
                         ["threatfeed", self.version])
        usage = sh(["/usr/bin/threatfeed-worker"], check=False)
        self.assertEqual(usage.returncode, 2)
        worker_cmds = re.findall(r"(?:usage: threatfeed-worker|\|) (\S+) ", usage.stderr)
        man = troff_headings(os.path.join(REPO, "man", "threatfeed-worker.1"), "DESCRIPTION")
        self.assertEqual(sorted(h[0] for h in man), sorted(worker_cmds))
        fcgi_bin = "/usr/lib/threatfeed/threatfeed.fcgi"
        self.assertEqual(sh([fcgi_bin, "--version"]).stdout.split(), ["threatfeed.fcgi", self.version])
        bad = sh([fcgi_bin, "--no-such-option"], check=False)
        self.assertEqual(bad.returncode, 2)
        self.assertIn("usage: threatfeed.fcgi", bad.stderr)
        with open(os.path.join(REPO, "man", "threatfeed.fcgi.8")) as f:
            man_text = f.read().replace("\\-", "-")
        for opt in set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", sh([fcgi_bin, "--help"]).stdout)):
            self.assertIn(opt, man_text, "threatfeed.fcgi(8) option")
        # what the timers run, as they run it (the store is created on first use)
        tick = json.loads(run_unit("threatfeed-tick.service"))
        self.assertEqual(tick, {"runs_created": 0, "supervisors_started": 0})
        self.assertIn("reaped", json.loads(run_unit("threatfeed-gc.service")))

    def check_run_through_handler(self):
        tmp = tempfile.mkdtemp(prefix="tf-deb-")
        self.addCleanup(shutil.rmtree, tmp, True)
        port_file = os.path.join(tmp, "port")
        up = subprocess.Popen([sys.executable, UPSTREAM, "--port", "0", "--port-file", port_file,
                               "--quiet", "--lifetime-s", "300"], stdout=subprocess.DEVNULL)
        self.addCleanup(lambda: (up.kill(), up.wait()))
        # the handler's socket, handed over on fd 0 (StandardInput=socket)
        path = os.path.join(tmp, "fcgi.sock")
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(path)
        lsock.listen(16)
        handler = as_unit("threatfeed-fcgi.service", stdin=lsock.fileno(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        lsock.close()
        self.addCleanup(lambda: handler.poll() is None and (handler.kill(), handler.wait()))

        status, health = fcgi(path, "GET", "/api/health")
        self.assertEqual(status, 200, health)
        self.assertEqual((health["status"], health["store"], health["version"]),
                         ("ok", "ok", self.version))
        deadline = time.monotonic() + 20
        while not os.path.exists(port_file):
            self.assertIsNone(up.poll(), "upstream died")
            self.assertLess(time.monotonic(), deadline, "upstream did not start")
            time.sleep(0.05)
        url = "http://127.0.0.1:%s/taxii2/" % open(port_file).read().strip()
        cli("feed", "add", "--id", "deb", "--name", "Deb", "--type", "taxii21", "--url", url,
            "--collection", COLLECTION)
        # the handler starts the run: it must find /usr/bin/threatfeed from
        # /usr/lib/threatfeed/, and that one /usr/bin/threatfeed-worker
        status, task = fcgi(path, "POST", "/api/threat-feeds/deb/consume")
        self.assertLess(status, 300, task)
        deadline = time.monotonic() + 60
        while True:
            status, t = fcgi(path, "GET", "/api/threat-feeds/task-status/" + task["task_id"])
            self.assertEqual(status, 200, t)
            if t["status"] in TERMINAL:
                break
            self.assertLess(time.monotonic(), deadline, "run not finished: %s" % t)
            time.sleep(0.2)
        self.assertEqual(t["status"], "completed", t)
        self.assertEqual(len(cli("export", "deb").splitlines()), 1000)
        # everything the run wrote belongs to the service user
        for d, dirs, files in os.walk(STATE):
            for n in dirs + files:
                owner = pwd.getpwuid(os.lstat(os.path.join(d, n)).st_uid).pw_name
                self.assertEqual(owner, PKG, os.path.join(d, n))

        handler.send_signal(signal.SIGTERM)
        self.assertEqual(handler.wait(timeout=20), 0, handler.stderr.read())


if __name__ == "__main__":
    unittest.main()
