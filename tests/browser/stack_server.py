#!/usr/bin/env python3
"""Start a throwaway threatfeed stack for the browser tests and keep it up.

    python3 tests/browser/stack_server.py [--server lighttpd] [--fcgi-procs N]
        [--conf KEY=VALUE ...] [-- UPSTREAM_ARGS...]

Starts tests/integration/stack.py's Stack (test upstream + web server with its
deploy/ config + FastCGI handler; the handler spawns the workers), then prints
exactly one JSON line on stdout:

    {"base_url": ..., "upstream_url": ..., "upstream_port": ..., "state_dir": ...,
     "db_dir": ..., "cli": ..., "pid": ..., "env": {...}}

and stays up until its stdin reaches EOF (the test process closed it or died),
or SIGTERM/SIGINT/SIGHUP, then stops everything it started (Stack.stop(), which
also ends the detached workers on this store) and exits.  A line "keep" on
stdin before that keeps the state dir (logs, store) for a post-mortem; its
path is printed to stderr.  Exit status: 0, 1 (could not start), 2 (sanitizer
reports were found in the stack's logs; the state dir is kept).  If the stack cannot
start it prints {"error": "..."} instead and exits 1.

Binaries: $TF_BIN_DIR, else build/asan when it holds the binaries, else build/.
They are copied to a private directory first (same basename, so an "asan"
dir still turns on the sanitizer options), so a rebuild while the tests run
cannot swap or truncate them under a running stack; --no-copy uses them in place.
Everything after "--" goes to tests/upstream/upstream.py (e.g. --objects 3000
--page-size 100 --page-delay-ms 300).  The stack's progress notes go to stderr.
"""

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

from stack import Stack  # noqa: E402


def default_bin_dir():
    if os.environ.get("TF_BIN_DIR"):
        return os.environ["TF_BIN_DIR"]
    asan = os.path.join(REPO, "build", "asan")
    if all(os.access(os.path.join(asan, p), os.X_OK) for p in ("threatfeed", "threatfeed.fcgi")):
        return asan
    return os.path.join(REPO, "build")


def main():
    argv = sys.argv[1:]
    upstream_args = []
    if "--" in argv:
        i = argv.index("--")
        argv, upstream_args = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default="lighttpd")
    ap.add_argument("--fcgi-procs", type=int, default=2)
    ap.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                    help="a THREATFEED_CONF setting (repeatable)")
    ap.add_argument("--no-copy", action="store_true",
                    help="run the binaries in place instead of from a private copy")
    args = ap.parse_args(argv)
    conf = {}
    for kv in args.conf:
        k, sep, v = kv.partition("=")
        if not sep:
            ap.error("--conf wants KEY=VALUE, got %r" % kv)
        conf[k.strip()] = v.strip()

    done = threading.Event()
    keep = [None]  # None: the Stack's own rule (kept on failure/sanitizer reports)

    def on_signal(signum, frame):
        done.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    src_dir = os.path.abspath(os.path.join(REPO, default_bin_dir()))
    copy_root = None
    try:
        # A build running meanwhile (make relinks a binary: it is missing or
        # half written for a moment) gets a few chances to finish.
        for attempt in range(4):
            bin_dir = src_dir
            if not args.no_copy:
                if copy_root:
                    shutil.rmtree(copy_root, ignore_errors=True)
                copy_root, bin_dir = copy_bins(src_dir)
            stack = Stack(args.server, bin_dir=bin_dir, conf=conf,
                          upstream_args=upstream_args, fcgi_procs=args.fcgi_procs)
            try:
                stack.start()
                break
            except Exception as e:  # StackError carries the log tails
                if "is missing" in str(e) and attempt < 3 and not done.is_set():
                    time.sleep(2)
                    continue
                sys.stdout.write(json.dumps({"error": str(e)}) + "\n")
                sys.stdout.flush()
                return 1
        return serve(stack, done, keep)
    finally:
        if copy_root:
            shutil.rmtree(copy_root, ignore_errors=True)


def _executables(d):
    """{name: (size, mtime_ns)} of the executable files in d."""
    out = {}
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else ():
        p = os.path.join(d, name)
        try:
            st = os.stat(p)
        except OSError:
            continue
        if os.path.isfile(p) and os.access(p, os.X_OK):
            out[name] = (st.st_size, st.st_mtime_ns)
    return out


def copy_bins(src_dir, settle_s=1.0, timeout_s=30.0):
    """Copy the executables of src_dir to a private dir of the same basename
    (an "asan" dir keeps turning on the sanitizer options); waits until none
    was written in the last `settle_s` and the set did not change while
    copying.  Returns (root to remove later, bin dir)."""
    tmp_root = os.path.join(REPO, "build", "test-tmp")
    os.makedirs(tmp_root, exist_ok=True)
    root = tempfile.mkdtemp(prefix="browser-bin-", dir=tmp_root)
    os.chmod(root, 0o755)
    private = os.path.join(root, os.path.basename(os.path.normpath(src_dir)))
    deadline = time.monotonic() + timeout_s
    while True:
        before = _executables(src_dir)
        newest = max((m for _, m in before.values()), default=0)
        fresh = time.time_ns() - newest < settle_s * 1e9
        if not fresh or time.monotonic() > deadline:
            shutil.rmtree(private, ignore_errors=True)
            os.makedirs(private)
            for name in before:
                try:
                    shutil.copy2(os.path.join(src_dir, name), private)
                except OSError:
                    pass
            if _executables(src_dir) == before or time.monotonic() > deadline:
                return root, private
        time.sleep(0.3)


def serve(stack, done, keep):
    """Print the stack's JSON line, wait for EOF/a signal, stop the stack."""
    try:
        info = {
            "base_url": stack.base_url,
            "upstream_url": stack.upstream_url,
            "upstream_port": stack.upstream_port,
            "state_dir": stack.state_dir,
            "db_dir": stack.db_dir,
            "cli": stack.cli_path,
            "bin_dir": stack.bin_dir,
            "pid": os.getpid(),
            "env": {k: v for k, v in stack.env.items()
                    if k.startswith(("THREATFEED_", "ASAN_", "UBSAN_"))},
        }
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()

        # Wait for EOF on stdin in a daemon thread so a signal can end the
        # wait too (the main thread sleeps on the event, which signals wake).
        def watch_stdin():
            try:
                for line in sys.stdin:
                    if line.strip() == "keep":
                        keep[0] = True
            except (OSError, ValueError):
                pass
            done.set()

        threading.Thread(target=watch_stdin, daemon=True).start()
        while not done.wait(0.5):
            pass
    finally:
        # Stack.stop() is idempotent; a second signal during it is ignored.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        stack.stop(keep=keep[0])
    reports = stack.sanitizer_reports
    return 2 if reports else 0


if __name__ == "__main__":
    sys.exit(main())
