"""In CI a skip is a failure (tests/realparts.py decides what "in CI" means).

When `in_ci()` is true, every test or collector reported as skipped, xfailed or
xpassed is recorded; at the end the session fails (exit status 1 unless it had
already failed) and the terminal summary lists each one with its reason. A
suite that does not run what it claims to cannot go quietly green.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.realparts import in_ci

_PLUGIN_NAME = "vkbackup-ci-skip-gate"


class CiSkipGate:
    """Records what did not really run; fails the session if anything did not."""

    def __init__(self) -> None:
        self.not_run: dict[str, str] = {}

    @staticmethod
    def reason(report: pytest.CollectReport | pytest.TestReport) -> str:
        wasxfail = getattr(report, "wasxfail", None)
        if wasxfail is not None:
            kind = "xfailed" if report.skipped else "xpassed"
            return f"{kind}: {wasxfail}" if wasxfail else kind
        longrepr = report.longrepr
        if isinstance(longrepr, tuple) and len(longrepr) == 3:
            return f"skipped: {str(longrepr[2]).removeprefix('Skipped: ')}"
        return f"skipped: {longrepr}"

    def record(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        if report.skipped or hasattr(report, "wasxfail"):
            self.not_run.setdefault(report.nodeid or "<session>", self.reason(report))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self.record(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.not_run and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.not_run:
            return
        terminalreporter.section(
            "CI: skipped or xfailed tests are failures", sep="=", red=True, bold=True
        )
        for nodeid, reason in sorted(self.not_run.items()):
            terminalreporter.line(f"NOT RUN {nodeid} - {reason}", red=True)
        terminalreporter.line(
            f"{len(self.not_run)} test(s) did not really run with CI set: install what they"
            " need (see tests/realparts.py), or run without CI to allow skips."
        )


def pytest_configure(config: pytest.Config) -> None:
    if in_ci() and not config.pluginmanager.has_plugin(_PLUGIN_NAME):
        config.pluginmanager.register(CiSkipGate(), _PLUGIN_NAME)


@pytest.fixture(autouse=True)
def _secrets_registry_per_test() -> Iterator[None]:
    """Each test starts with the secrets registry (vkbackup.logs) as it found it and
    leaves it so: a secret one test registers ("password", from an age test vector)
    must not mask another test's expected text, whatever the order tests run in."""
    from vkbackup import logs

    with logs._SECRETS_LOCK:
        saved = set(logs._SECRETS)
    yield
    with logs._SECRETS_LOCK:
        logs._SECRETS.clear()
        logs._SECRETS.update(saved)
