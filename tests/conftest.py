"""Fixtures: the script runs a test session shares, the CLI in-process, and the check that
no instrumentation is left installed around every test. What they use is in `helpers`.

Specs found in a test's parameters or in its ``@pytest.mark.uses(spec, ...)`` marker
start in the background as soon as the session is collected.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable

import pytest
from helpers import Runs, Spec, assert_pristine


@pytest.fixture(autouse=True)
def _no_instrumentation_left() -> Iterable[None]:
    assert_pristine()
    yield
    assert_pristine()


@pytest.fixture
def stepdbg_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """``stepdbg ARGS...`` through its console entry point, in this process (no interpreter or
    torch to start for a command that reads traces or refuses its input), in an 80-column
    terminal's environment: ``(exit code, stdout, stderr)``."""
    from stepdbg.cli import main

    def invoke(*args: str) -> tuple[int, str, str]:
        monkeypatch.setenv("COLUMNS", "80")
        monkeypatch.setattr(sys, "argv", ["stepdbg", *args])
        with pytest.raises(SystemExit) as exit:
            main()
        out, err = capsys.readouterr()
        return exit.value.code if isinstance(exit.value.code, int) else 0, out, err

    return invoke


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "uses(*specs): stepdbg runs this test reads (started early, in parallel)")


def _specs_of(item: pytest.Item) -> list[Spec]:
    found: list[Spec] = []
    callspec = getattr(item, "callspec", None)
    for value in callspec.params.values() if callspec else ():
        candidates = value if isinstance(value, (tuple, list)) else (value,)
        found.extend(v for v in candidates if isinstance(v, Spec))
        found.extend(v.spec for v in candidates if hasattr(v, "spec") and isinstance(v.spec, Spec))
    for marker in item.iter_markers("uses"):
        found.extend(a for a in marker.args if isinstance(a, Spec))
    return found


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config._stepdbg_specs = [spec for item in session.items for spec in _specs_of(item)]  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterable[Runs]:
    """The session's script runs; ``runs.get(spec)`` returns one, run once and shared by all tests."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:  # the workers share their parent's temp folder; each runs one script at a time besides its tests
        root = tmp_path_factory.getbasetemp().parent / "stepdbg-runs"
        threads = 1
    else:
        root = tmp_path_factory.mktemp("stepdbg-runs")
        threads = max(2, os.cpu_count() or 2)
    threads = int(os.environ.get("STEPDBG_TEST_THREADS", 0)) or threads
    pool = Runs(root, threads)
    # under xdist, odd workers start from the other end of the list, so the workers rarely meet
    reverse = bool(worker) and int(worker.lstrip("gw") or 0) % 2 == 1
    pool.start(getattr(request.config, "_stepdbg_specs", []), reverse=reverse)
    yield pool
    pool.close()
