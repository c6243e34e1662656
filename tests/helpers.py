"""What the tests share: running training scripts under ``stepdbg run`` (or plain ``python``),
reading their traces, and what a terminal shows. Fixtures that use these live in conftest.py.

Every script run is a process of its own (``python -m stepdbg run --no-live -o TRACE
[options] script [args]``, see `run_stepdbg`) with ``OMP_NUM_THREADS=1`` and
``PYTHONHASHSEED=0``. Each costs seconds of CPU (importing torch, and the first
optimizer imports torch._dynamo), so the tests describe the runs they read as a
`Spec`, and the session fixture ``runs`` (a `Runs`) runs each spec once and shares the
result. Under pytest-xdist the workers share one folder of results, guarded by file
locks, so a spec runs once whichever worker asks first. A spec's process is forked
from a server that has imported torch already (`forkserver`); with
``STEPDBG_TEST_FRESH_RUNS=1`` each starts a fresh interpreter instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.autograd
import torch.autograd.graph
import torch.nn.modules.module as module_module
import torch.optim.optimizer as optimizer_module  # not an attribute of torch.optim until imported this way
from filelock import FileLock, Timeout
from forkserver import ForkServer
from torch.optim.lr_scheduler import ChainedScheduler, LRScheduler, ReduceLROnPlateau, SequentialLR
from torch.utils.data.dataloader import _BaseDataLoaderIter

SCRIPTS = Path(__file__).parent / "scripts"
RUN_TIMEOUT = 600
"""Seconds before a script run counts as hung: a safety net, never a speed requirement (on a
loaded 2-core machine one run can take minutes)."""
WORK = "[run b]"
"""The folder a `Spec` runs in: a name rich would read as markup, which stepdbg must print as it is."""
SLOW_SCRIPTS = ("ok_lightning.py", "ok_skorch.py", "ok_ignite.py", "ok_accelerate.py")
"""Started first, so that the slowest runs do not finish last."""

# ---- pristine torch, captured before anything could install stepdbg in this process ----

_WATCHED: dict[str, Callable[[], Any]] = {
    "torch.optim.Optimizer.zero_grad": lambda: torch.optim.Optimizer.__dict__["zero_grad"],
    "torch.optim.Optimizer.__init__": lambda: torch.optim.Optimizer.__dict__["__init__"],
    "torch.nn.Module.zero_grad": lambda: torch.nn.Module.__dict__["zero_grad"],
    "torch.autograd.graph._engine_run_backward": lambda: torch.autograd.graph._engine_run_backward,
    "torch.autograd._engine_run_backward": lambda: torch.autograd._engine_run_backward,
    "torch.autograd.backward": lambda: torch.autograd.backward,
    "torch.Tensor.backward": lambda: torch.Tensor.__dict__["backward"],
    "LRScheduler._initial_step": lambda: LRScheduler.__dict__["_initial_step"],
    "ReduceLROnPlateau.__init__": lambda: ReduceLROnPlateau.__dict__["__init__"],
    "SequentialLR.__init__": lambda: SequentialLR.__dict__["__init__"],
    "ChainedScheduler.__init__": lambda: ChainedScheduler.__dict__["__init__"],
    "torch.amp.GradScaler.step": lambda: torch.amp.GradScaler.__dict__["step"],
    "torch.multiprocessing.spawn._wrap": lambda: sys.modules["torch.multiprocessing.spawn"]._wrap,
    "_BaseDataLoaderIter.__next__": lambda: _BaseDataLoaderIter.__dict__["__next__"],
}
_PRISTINE = {name: get() for name, get in _WATCHED.items()}
_GLOBAL_HOOKS = {
    "optimizer step pre-hook": optimizer_module._global_optimizer_pre_hooks,
    "optimizer step post-hook": optimizer_module._global_optimizer_post_hooks,
    "module parameter registration hook": module_module._global_parameter_registration_hooks,
    "module registration hook": module_module._global_module_registration_hooks,
}


def assert_pristine() -> None:
    """No stepdbg instrumentation left installed in this process."""
    changed = [name for name, get in _WATCHED.items() if get() is not _PRISTINE[name]]
    assert not changed, f"instrumentation left installed: {changed}"
    left = [what for what, hooks in _GLOBAL_HOOKS.items() if hooks]
    assert not left, f"global hooks left installed: {left}"


# ---- running scripts -----------------------------------------------------------------


def script_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "NO_COLOR": "1"})
    env.pop("RANK", None)
    env.update(extra or {})
    return env


PROGRESS_LINE = re.compile(r"stepdbg(\[[^\]]*\])?: (optimizer \d+|no optimizer) step \d+: loss ")
"""The plain progress line a run without the table prints every few seconds (`stepdbg.progress`)."""


def stepdbg_lines(stderr: str) -> list[str]:
    """stepdbg's own lines in a run's stderr, but for its periodic progress lines: whether one
    appears depends on how fast the machine is, so no test may count on one, or on none."""
    return [line for line in stderr.splitlines() if line.startswith("stepdbg") and not PROGRESS_LINE.match(line)]


def read_trace(path: Path) -> list[dict[str, Any]]:
    """Every record of a trace, as dicts (non-finite values stay null)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def stepdbg_command(script: str | Path, *args: str, trace: Path | None, options: Iterable[str] = ()) -> list[str]:
    """``python``'s arguments for ``stepdbg run --no-live -o TRACE [options] script args...``
    (without ``-o`` for a trace of None: the trace goes where stepdbg puts it by default)."""
    output = ["-o", str(trace)] if trace is not None else []
    return ["-m", "stepdbg", "run", "--no-live", *output, *options, str(script_path(script)), *args]


def script_path(script: str | Path) -> Path:
    """A script of tests/scripts by its name, or any script by its absolute path."""
    return SCRIPTS / script if not Path(script).is_absolute() else Path(script)


def run_stepdbg(
    script: str | Path,
    *args: str,
    tmp_path: Path,
    options: Iterable[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = RUN_TIMEOUT,
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """``stepdbg run --no-live -o TRACE [options] script args...`` in ``tmp_path``, in a fresh
    interpreter: the process and the trace's records."""
    trace = tmp_path / f"{script_path(script).stem}.stepdbg.jsonl"
    command = stepdbg_command(script, *args, trace=trace, options=options)
    proc = run_fresh(command, cwd=tmp_path, env=script_env(env), timeout=timeout)
    records = read_trace(trace) if trace.exists() else []
    return proc, records


def run_python(
    script: str | Path, *args: str, tmp_path: Path, env: dict[str, str] | None = None, timeout: float = RUN_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """``python script args...`` in ``tmp_path``, in a fresh interpreter, the same environment as `run_stepdbg`."""
    return run_fresh([str(script_path(script)), *args], cwd=tmp_path, env=script_env(env), timeout=timeout)


def run_torchrun(
    script: str, tmp_path: Path, *options: str, timeout: float = RUN_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node 2 -m stepdbg run --no-live --strict [options]
    script`` in ``tmp_path``: two ranks, each a fresh interpreter, and their traces."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    argv = [*launcher, "-m", "stepdbg", "run", "--no-live", "--strict", *options, str(script_path(script))]
    return run_fresh(argv, cwd=tmp_path, env=script_env(), timeout=timeout)


def run_fresh(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``python ARGV...`` in a fresh interpreter, its output captured."""
    return subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


# ---- reading records --------------------------------------------------------------------


def anomalies(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("type") == "anomaly"]


def steps(records: list[dict[str, Any]], optimizer: int | str | None = "any") -> list[dict[str, Any]]:
    """Step records, all of them or only those of one optimizer (None: the no-optimizer records)."""
    return [r for r in records if r.get("type") == "step" and (optimizer == "any" or r.get("optimizer") == optimizer)]


def optimizers(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per optimizer, in the order they were first announced; the latest
    description of each (docs/trace-format.md: groups added later are announced again)."""
    latest: dict[int, dict[str, Any]] = {}
    for record in records:
        if record.get("type") == "optimizer":
            latest[record["optimizer"]] = record
    return list(latest.values())


def end(records: list[dict[str, Any]]) -> dict[str, Any]:
    ends = [r for r in records if r.get("type") == "end"]
    assert len(ends) == 1, f"expected one end record, got {len(ends)}"
    assert records[-1] is ends[0], "the end record is not last"
    return ends[0]


# ---- in-process loops ---------------------------------------------------------------------


def sgd_steps(model: torch.nn.Module, batches: Iterable[torch.Tensor], epochs: int = 1) -> None:
    """Train ``model`` with SGD on ``batches`` (iterated ``epochs`` times): zero_grad, backward of
    the output's sum, step, once per batch: the calls a test's in-process hooks see."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(epochs):
        for batch in batches:
            optimizer.zero_grad()
            model(batch).sum().backward()
            optimizer.step()


# ---- the shared, parallel, cached runs -----------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One run of a script: under stepdbg (with ``options``) or, with ``python=True``, plain."""

    script: str
    args: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    python: bool = False
    save_state: bool = False
    """Set STEPDBG_TEST_OUT, where the scripts that support it save their final state."""
    default_trace: bool = False
    """Without ``-o``: the trace goes where stepdbg puts it by default."""
    fresh: bool = False
    """In an interpreter of its own rather than forked from the server (`forkserver`), whose
    children all share its memory layout: for runs that must be independent."""

    def __str__(self) -> str:
        runner = "python" if self.python else "stepdbg run " + " ".join(self.options)
        return f"{runner} {self.script} {' '.join(self.args)}".replace("  ", " ").strip()


@dataclass
class Run:
    spec: Spec
    proc: subprocess.CompletedProcess[str]
    trace: Path | None = None
    """The trace as the run wrote it (read it; a test that changes a trace changes a `trace_file`)."""
    records: list[dict[str, Any]] = field(default_factory=list)
    state_path: Path | None = None

    @property
    def end(self) -> dict[str, Any]:
        return end(self.records)

    @property
    def anomalies(self) -> list[dict[str, Any]]:
        return anomalies(self.records)

    def steps(self, optimizer: int | str | None = "any") -> list[dict[str, Any]]:
        return steps(self.records, optimizer)

    def trace_file(self, folder: Path) -> Path:
        """The run's trace, written back to a file in ``folder`` for the commands that read one."""
        path = folder / f"{Path(self.spec.script).stem}.stepdbg.jsonl"
        path.write_text("".join(json.dumps(record) + "\n" for record in self.records))
        return path

    def state(self) -> dict[str, Any]:
        assert self.state_path is not None and self.state_path.exists(), f"{self.spec}: no saved state"
        return torch.load(self.state_path, weights_only=False)

    def describe(self) -> str:
        """For assertion messages: the command, its exit code, stderr's tail and the anomalies."""
        found = [(a["rule"], a["step"], a["optimizer"], a["param"]) for a in self.anomalies]
        tail = self.proc.stderr[-2000:]
        return f"\n[{self.spec}] exit {self.proc.returncode}; anomalies {found}\nstderr tail:\n{tail}"


class Runs:
    """Runs each `Spec` once per test session, several at a time.

    Results live in ``root``, one folder per spec, guarded by a file lock: with
    pytest-xdist every worker has its own `Runs` on the same ``root``, and a spec
    that one worker has run (or is running) is read (or waited for) by the others.
    """

    def __init__(self, root: Path, threads: int) -> None:
        self.root = root
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="stepdbg-run")
        self._prefetch: list[Future[None]] = []
        fresh = os.environ.get("STEPDBG_TEST_FRESH_RUNS") == "1"
        self._forks = None if fresh else ForkServer(script_env(), root / f"forkserver-{os.getpid()}.log")

    def start(self, specs: Iterable[Spec], reverse: bool = False) -> None:
        """Run these in the background, slowest scripts first; specs being run elsewhere are left to them."""
        ordered = sorted(dict.fromkeys(specs), key=lambda s: s.script not in SLOW_SCRIPTS)
        for spec in reversed(ordered) if reverse else ordered:
            self._prefetch.append(self._pool.submit(self._obtain, spec, False))

    def get(self, spec: Spec) -> Run:
        run = self._obtain(spec, True)
        assert run is not None
        return run

    def _folder(self, spec: Spec) -> Path:
        key = hashlib.sha1(repr(spec).encode()).hexdigest()[:12]
        return self.root / f"{Path(spec.script).stem}-{key}"

    def _obtain(self, spec: Spec, wait: bool) -> Run | None:
        folder = self._folder(spec)
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder) + ".lock")
        try:
            lock.acquire(timeout=-1 if wait else 0)
        except Timeout:
            return None  # another thread or worker is running it
        try:
            result = folder / "result.json"
            if not result.exists():
                self._run(spec, folder, result)
            return self._load(spec, folder, result)
        finally:
            lock.release()

    def _run(self, spec: Spec, folder: Path, result: Path) -> None:
        work = folder / WORK
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        state = folder / "state.pt"
        env = script_env({"STEPDBG_TEST_OUT": str(state)} if spec.save_state else None)
        if spec.python:
            argv = [str(script_path(spec.script)), *spec.args]
        else:
            trace = None if spec.default_trace else work / f"{script_path(spec.script).stem}.stepdbg.jsonl"
            argv = stepdbg_command(spec.script, *spec.args, trace=trace, options=spec.options)
        if self._forks is not None and not spec.fresh:
            proc = self._forks.run(argv, cwd=work, env=env, streams=folder / "process", timeout=RUN_TIMEOUT)
        else:
            proc = run_fresh(argv, cwd=work, env=env, timeout=RUN_TIMEOUT)
        saved = {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr, "args": proc.args}
        partial = result.with_suffix(".partial")
        partial.write_text(json.dumps(saved))
        partial.replace(result)

    @staticmethod
    def _load(spec: Spec, folder: Path, result: Path) -> Run:
        saved = json.loads(result.read_text())
        proc = subprocess.CompletedProcess(saved["args"], saved["returncode"], saved["stdout"], saved["stderr"])
        traces = sorted((folder / WORK).glob("*.stepdbg.jsonl"))
        trace = traces[0] if traces else None
        records = read_trace(trace) if trace else []
        return Run(spec, proc, trace, records, folder / "state.pt" if spec.save_state else None)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._forks is not None:
            self._forks.close()


# ---- what a terminal shows (the live table tests) ----------------------------------------------


class PseudoTerminal:
    """A pseudo-terminal of a given size: ``file`` is what a script's stderr would be, and
    ``received`` grows, on a thread of its own, with every byte written to it."""

    def __init__(self, rows: int, columns: int) -> None:
        self.master, self.slave = os.openpty()
        set_size(self.slave, rows, columns)
        self.file = os.fdopen(self.slave, "w", buffering=1, encoding="utf-8")
        self.received = bytearray()  # grown by the reader thread alone
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.received.extend(chunk)

    def close(self) -> None:
        self.file.close()
        os.close(self.master)


def set_size(fd: int, rows: int, columns: int) -> None:
    """Give the pseudo-terminal at ``fd`` a size, as a terminal window does (and a resize)."""
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def shown_lines(screen: Any) -> list[str]:
    """A pyte ``HistoryScreen``'s lines, those scrolled off the top first, without trailing blank lines."""
    columns = screen.columns
    scrolled = ["".join(line[x].data for x in range(columns)) for line in screen.history.top]
    lines = [line.rstrip() for line in scrolled + screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return lines
