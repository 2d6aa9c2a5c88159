"""Shared by every chart test module.

In CI (`CI` set) a skipped test is a failure: its precondition (a daemon, the static binary, a
registry that scripts/test.sh starts) is missing, and a run that checks nothing must not pass.
A developer's narrowed run still skips, and pytest's `-rs` (scripts/test.sh passes it) lists
each skip with its reason.
"""

import os

import pytest


def _in_ci() -> bool:
    return bool(os.environ.get("CI"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if _in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every precondition must be met: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if _in_ci() and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"module skipped in CI, where every precondition must be met: {reason}"
