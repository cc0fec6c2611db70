"""Runs the unittest files of one directory and prints "pyrun: N passed, N failed, N skipped".

`pyrun.py DIR NAME...` runs only the named tests (module, module.Class or
module.Class.test) of DIR. `--shard K/N` (before DIR) runs the K-th of N
shares of the test classes, dealt round-robin in name order, so scripts/test.sh
can run a suite in parallel lanes: the classes start their own stacks on
random ports and state directories, so shares never share a process.

Used by scripts/test.sh so every layer reports in the same words. The ten
slowest tests are printed last, to show where the suite's time goes.
"""
import os
import sys
import time
import unittest


def flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from flatten(t)
        else:
            yield t


def shard(suite, k, n):
    """Keep whole classes together (setUpClass starts their stack)."""
    by_class = {}
    for t in flatten(suite):
        by_class.setdefault(f"{type(t).__module__}.{type(t).__qualname__}", []).append(t)
    mine = unittest.TestSuite()
    for i, name in enumerate(sorted(by_class)):
        if i % n == k - 1:
            mine.addTests(by_class[name])
    return mine


class TimedResult(unittest.TextTestResult):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.durations = []
        self._t0 = 0.0

    def startTest(self, test):
        self._t0 = time.monotonic()
        super().startTest(test)

    def stopTest(self, test):
        self.durations.append((time.monotonic() - self._t0, test.id()))
        super().stopTest(test)


def main() -> int:
    args = sys.argv[1:]
    k = n = 1
    if args and args[0] == "--shard":
        k, n = (int(x) for x in args[1].split("/"))
        args = args[2:]
    start = args[0]
    sys.path.insert(0, os.path.abspath(start))
    sys.path.insert(0, os.path.abspath("tests/integration"))
    if len(args) > 1:
        suite = unittest.defaultTestLoader.loadTestsFromNames(args[1:])
    else:
        suite = unittest.defaultTestLoader.discover(start, pattern="test_*.py", top_level_dir=start)
    if n > 1:
        suite = shard(suite, k, n)
    runner = unittest.TextTestRunner(verbosity=2, stream=sys.stdout, resultclass=TimedResult)
    result = runner.run(suite)
    for secs, name in sorted(result.durations, reverse=True)[:10]:
        print(f"pyrun: slow {secs:7.1f} s {name}")
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    # a SkipTest in setUpClass is one entry of result.skipped that is not a
    # test testsRun counted: only skipped tests come off the passed count
    skipped_run = sum(isinstance(t, unittest.TestCase) for t, _ in result.skipped)
    passed = result.testsRun - failed - skipped_run
    print(f"pyrun: {passed} passed, {failed} failed, {len(result.skipped)} skipped")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
