"""tests/realparts.py and the CI skip gate in tests/conftest.py: in CI a missing real
part fails, and a session in which anything was skipped or xfailed exits non-zero;
without CI the same skips are allowed and the run exits 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.realparts import in_ci, require

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]

SKIPPING = """
import pytest
from tests.realparts import require

def test_runs():
    pass

def test_needs_a_frobnicator():
    require("no frobnicator on this machine")

def test_skips_the_old_way():
    pytest.skip("skipped directly")
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose runs can import `tests` and load tests/conftest.py with -p."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.syspath_prepend(str(REPO))
    return pytester


def run(p: pytest.Pytester, *args: str, subprocess: bool = False) -> pytest.RunResult:
    argv = ("-p", "tests.conftest", "-p", "no:cacheprovider", "-rA", *args)
    return p.runpytest_subprocess(*argv) if subprocess else p.runpytest(*argv)


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", "github", " True "])
def test_in_ci_when_ci_is_set_to_a_true_value(value: str) -> None:
    assert in_ci({"CI": value})


@pytest.mark.parametrize("value", [None, "", "0", "false", "False", "no", "NO", " "])
def test_not_in_ci_when_ci_is_unset_empty_or_false(value: str | None) -> None:
    assert not in_ci({} if value is None else {"CI": value})


def test_require_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"CI needs .*: sshd is missing"):
        require("sshd is missing")


def test_require_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="sshd is missing"):
        require("sshd is missing")


def test_with_ci_a_skip_makes_the_run_exit_non_zero(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    inner.makepyfile(test_inner=SKIPPING)
    r = run(inner, subprocess=True)
    # require() fails in CI; the plain pytest.skip is caught by the gate
    r.assert_outcomes(passed=1, failed=1, skipped=1)
    assert r.ret == 1
    r.stdout.fnmatch_lines(
        [
            "*CI needs every real part and one is missing: no frobnicator on this machine*",
            "*CI: skipped or xfailed tests are failures*",
            "NOT RUN test_inner.py::test_skips_the_old_way - skipped: skipped directly",
        ]
    )


def test_with_ci_a_skip_alone_fails_an_otherwise_green_run(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "1")
    inner.makepyfile(
        test_inner="""
        import pytest
        def test_runs():
            pass
        def test_skipped():
            pytest.skip("nothing here")
        """
    )
    for subprocess in (True, False):
        r = run(inner, subprocess=subprocess)
        r.assert_outcomes(passed=1, skipped=1)
        assert r.ret == pytest.ExitCode.TESTS_FAILED
        r.stdout.fnmatch_lines(["NOT RUN test_inner.py::test_skipped - skipped: nothing here"])


def test_without_ci_the_same_skips_exit_zero(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    inner.makepyfile(test_inner=SKIPPING)
    r = run(inner, subprocess=True)
    r.assert_outcomes(passed=1, skipped=2)
    assert r.ret == 0
    r.stdout.no_fnmatch_line("*CI: skipped or xfailed*")


def test_ci_false_allows_skips(inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "false")
    inner.makepyfile(test_inner=SKIPPING)
    r = run(inner)
    r.assert_outcomes(passed=1, skipped=2)
    assert r.ret == 0


def test_with_ci_xfail_xpass_skipif_and_module_skips_count(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    inner.makepyfile(
        test_marks="""
        import pytest
        @pytest.mark.xfail(reason="known bug")
        def test_xfails():
            assert False
        @pytest.mark.xfail(reason="fixed already?")
        def test_xpasses():
            pass
        @pytest.mark.skipif(True, reason="not on this box")
        def test_skipif():
            pass
        """,
        test_module_skip="""
        import pytest
        pytest.importorskip("no_such_module_anywhere")
        def test_never():
            pass
        """,
    )
    r = run(inner)
    assert r.ret == pytest.ExitCode.TESTS_FAILED
    r.stdout.fnmatch_lines_random(
        [
            "NOT RUN test_marks.py::test_xfails - xfailed: known bug",
            "NOT RUN test_marks.py::test_xpasses - xpassed: fixed already?",
            "NOT RUN test_marks.py::test_skipif - skipped: not on this box",
            "NOT RUN test_module_skip.py - skipped: *no_such_module_anywhere*",
        ]
    )


def test_with_ci_a_failed_run_keeps_its_exit_status(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    inner.makepyfile(test_inner="import pytest\ndef test_x():\n    pytest.skip('s')\n")
    r = run(inner, "-k", "nothing_matches")
    assert r.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    r = run(inner, "--no-such-option")
    assert r.ret == pytest.ExitCode.USAGE_ERROR


def test_with_ci_a_green_run_stays_green(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    inner.makepyfile(test_inner="def test_x():\n    pass\n")
    r = run(inner)
    r.assert_outcomes(passed=1)
    assert r.ret == 0
