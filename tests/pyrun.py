"""Runs the unittest files of one directory and prints "pyrun: N passed, N failed".

`pyrun.py DIR NAME...` runs only the named tests (module, module.Class or
module.Class.test) of DIR.

Used by scripts/test.sh so every layer reports in the same words.
"""
import os
import sys
import unittest


def main() -> int:
    start = sys.argv[1]
    sys.path.insert(0, os.path.abspath(start))
    sys.path.insert(0, os.path.abspath("tests/integration"))
    if len(sys.argv) > 2:
        suite = unittest.defaultTestLoader.loadTestsFromNames(sys.argv[2:])
    else:
        suite = unittest.defaultTestLoader.discover(start, pattern="test_*.py", top_level_dir=start)
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    # a SkipTest in setUpClass is one entry of result.skipped that is not a
    # test testsRun counted: only skipped tests come off the passed count
    skipped_run = sum(isinstance(t, unittest.TestCase) for t, _ in result.skipped)
    passed = result.testsRun - failed - skipped_run
    print(f"pyrun: {passed} passed, {failed} failed, {len(result.skipped)} skipped")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
