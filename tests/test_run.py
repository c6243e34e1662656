"""`stepdbg run` as a user runs it: the script runs as under `python`, exit codes pass
through, errors are one line, and the trace survives every way a run can end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import RUN_TIMEOUT, WORK, Runs, Spec, set_size, shown_lines

SCRIPTS = Path(__file__).parent / "cli_scripts"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stepdbg", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("typed", ["absolute", "cli_scripts/report_env.py", "./cli_scripts/report_env.py"])
def test_script_runs_as_under_python(tmp_path: Path, typed: str) -> None:
    """Python makes ``__file__`` and the code's path absolute by joining the current
    directory to the path as typed, leaves ``sys.argv[0]`` as typed, and puts the
    script's folder in ``sys.path[0]``: warnings and tracebacks name the same file."""
    script = str(SCRIPTS / "report_env.py") if typed == "absolute" else typed
    cwd = SCRIPTS.parent
    bare = subprocess.run(
        [sys.executable, script, "--lr", "3e-4", "-o", "x"], cwd=cwd, env=ENV, capture_output=True, text=True
    )
    traced = run("run", "-o", str(tmp_path / "t.jsonl"), script, "--lr", "3e-4", "-o", "x", cwd=cwd)
    assert bare.returncode == traced.returncode == 0, traced.stderr
    assert traced.stdout == bare.stdout  # byte for byte: the script's stdout is its own
    seen = json.loads(traced.stdout)
    assert seen == {
        "name": "__main__",
        "file": os.path.join(cwd, script),
        "code_file": os.path.join(cwd, script),
        "argv": [script, "--lr", "3e-4", "-o", "x"],  # stepdbg's own -o went to the script
        "path0": str(SCRIPTS),
        "sibling": "sibling",
        "builtins": "module",
    }


def test_module_mode(tmp_path: Path) -> None:
    trace = tmp_path / "m.jsonl"
    shutil.copytree(SCRIPTS / "pkg", tmp_path / "pkg")
    result = run("run", "-o", str(trace), "-m", "pkg.train_module", "-o", "arg", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["name"] == "__main__"
    assert seen["argv"] == [str(tmp_path / "pkg" / "train_module.py"), "-o", "arg"]
    assert [r["step"] for r in records(trace) if r["type"] == "step"] == [0, 1, 2]


def test_module_mode_finds_modules_in_the_current_directory(tmp_path: Path) -> None:
    """As ``python -m``: from the console script too, whose own folder is sys.path[0]
    (``python -m stepdbg`` would hide it, putting the current directory there first)."""
    console_script = Path(sys.executable).parent / "stepdbg"
    if not console_script.exists():
        pytest.skip("stepdbg's console script is not installed beside this python")
    shutil.copytree(SCRIPTS / "pkg", tmp_path / "pkg")
    result = subprocess.run(
        [str(console_script), "run", "--quiet", "-m", "pkg.train_module"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["argv"] == [str(tmp_path / "pkg" / "train_module.py")]


def test_a_traceback_through_stepdbgs_hooks_is_pythons(tmp_path: Path) -> None:
    """An error raised inside backward passes through stepdbg's wrapper of the engine
    entry: the traceback shows torch's frames and the user's, as under python."""
    script = tmp_path / "twice.py"
    script.write_text(
        "import torch\nw = torch.ones(3, requires_grad=True)\nloss = (w * 2).sum()\nloss.backward()\nloss.backward()\n"
    )
    bare = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=ENV, capture_output=True, text=True)
    traced = run("run", "--quiet", str(script), cwd=tmp_path)
    assert bare.returncode == traced.returncode == 1
    assert "Trying to backward through the graph a second time" in bare.stderr
    assert traced.stderr == bare.stderr


def test_a_linked_script_runs_from_its_targets_folder(tmp_path: Path) -> None:
    """python puts the folder of the script a symlink points to in sys.path[0]: its siblings import."""
    link = tmp_path / "link.py"
    link.symlink_to(SCRIPTS / "report_env.py")
    bare = subprocess.run([sys.executable, str(link)], cwd=tmp_path, env=ENV, capture_output=True, text=True)
    traced = run("run", "--quiet", str(link), cwd=tmp_path)
    assert bare.returncode == traced.returncode == 0, traced.stderr
    assert traced.stdout == bare.stdout and json.loads(traced.stdout)["path0"] == str(SCRIPTS)


def test_the_scripts_main_module_outlives_its_body(tmp_path: Path) -> None:
    """As under python, an atexit handler (or a thread still running) pickles a class the
    script defined: ``__main__`` is still the script's module once its body has run."""
    script = tmp_path / "saves_at_exit.py"
    script.write_text(
        "import atexit, pickle\n\nclass Checkpoint:\n    pass\n\n"
        "atexit.register(lambda: print('pickled', len(pickle.dumps(Checkpoint())) > 0))\n"
    )
    traced = run("run", "--quiet", str(script), cwd=tmp_path)
    assert (traced.returncode, traced.stdout, traced.stderr) == (0, "pickled True\n", "")


ENDINGS = ("ok", "exit3", "exit-message", "raise", "interrupt", "os-exit")


def ending_spec(how: str) -> Spec:
    """``stepdbg run --every 1 exits.py HOW`` with the default trace path, in a folder whose
    name rich would read as markup (`helpers.WORK`)."""
    return Spec(str(SCRIPTS / "exits.py"), (how,), options=("--every", "1"), default_trace=True)


Ending = Callable[[str], tuple[subprocess.CompletedProcess[str], Path]]


@pytest.fixture
def ending(runs: Runs) -> Ending:
    """The process and the trace of ``exits.py HOW``, run once for every test that asks for it."""

    def get(how: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        run = runs.get(ending_spec(how))
        assert run.trace is not None, run.describe()
        assert run.trace.name == "exits.stepdbg.jsonl" and run.trace.parent.name == WORK
        return run.proc, run.trace

    return get


@pytest.mark.uses(ending_spec("ok"))
def test_default_trace_path_is_named_after_the_script(ending: Ending) -> None:
    result, trace = ending("ok")
    assert result.returncode == 0
    assert trace.exists()
    assert str(trace) in result.stderr


@pytest.mark.parametrize(
    ("how", "code", "status"),
    [
        ("ok", 0, "ok"),
        ("exit3", 3, "ok"),
        ("exit-message", 1, "ok"),
        ("raise", 1, "error"),
        ("interrupt", 130, "interrupted"),
        ("os-exit", 4, "ok"),
    ],
)
@pytest.mark.uses(*map(ending_spec, ENDINGS))
def test_exit_codes_and_end_record(ending: Ending, how: str, code: int, status: str) -> None:
    result, trace = ending(how)
    assert result.returncode == code, result.stderr
    assert result.stdout == "trained\n"
    lines = records(trace)
    assert lines[0]["type"] == "header" and lines[0]["schema"] == 1
    assert [r["step"] for r in lines if r["type"] == "step"] == [0, 1]
    end = lines[-1]
    assert end["type"] == "end"
    assert (end["status"], end["exit_code"], end["steps"]) == (status, code, 2)


@pytest.mark.uses(ending_spec("raise"))
def test_user_traceback_without_stepdbg_frames(ending: Ending) -> None:
    result, _ = ending("raise")
    assert result.returncode == 1
    assert "Traceback (most recent call last):" in result.stderr
    assert "ValueError: boom from the user's script" in result.stderr
    assert 'exits.py", line' in result.stderr
    traceback = result.stderr.split("Traceback")[1]
    assert "stepdbg" not in traceback.split("ValueError")[0]
    assert "runpy" not in traceback


@pytest.mark.uses(ending_spec("exit-message"))
def test_sys_exit_message_goes_to_stderr(ending: Ending) -> None:
    result, _ = ending("exit-message")
    assert result.returncode == 1
    assert "goodbye" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no_such_script.py"], "no such file: no_such_script.py"),
        (["run", "-m", "no_such_module_xyz"], "no module named 'no_such_module_xyz'"),
        (["run", "--every", "-1", "x.py"], "greater than or equal to 0"),
        (["diff", "a.jsonl"], "Missing argument 'B'"),
        (["run"], "Missing argument 'SCRIPT [ARGS]...'"),
        (["run", "--bogus", "x.py"], "no such option: --bogus"),
        (["show", "missing.jsonl"], "missing.jsonl: no such file"),
        (["run", "-o", "-", "x.py"], "the trace cannot go to stdout (-o -)"),
        (["run", "-o", "no/t.jsonl", str(SCRIPTS / "exits.py")], "cannot write the trace no/t.jsonl: "),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    stepdbg_cli: Callable[..., tuple[int, str, str]],
    args: list[str],
    message: str,
) -> None:
    """Through the console entry point in this process: an exception it let through would fail the test."""
    monkeypatch.chdir(tmp_path)
    code, out, err = stepdbg_cli(*args)
    assert (code, out) == (2, "")
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("stepdbg: error:")
    assert message in lines[0]
    assert not list(tmp_path.iterdir()), "no trace for a run that never started"


QUIET = Spec(str(SCRIPTS / "exits.py"), ("ok",), options=("--quiet",))


@pytest.mark.uses(QUIET)
def test_quiet_prints_nothing_of_its_own(runs: Runs) -> None:
    result = runs.get(QUIET).proc
    assert result.returncode == 0
    assert result.stdout == "trained\n"
    assert result.stderr == ""


@pytest.mark.uses(ending_spec("ok"))
def test_the_end_report_names_the_trace(ending: Ending) -> None:
    result, trace = ending("ok")  # its path has brackets, which rich would read as markup
    assert "stepdbg: 2 steps" in result.stderr
    assert "no anomalies" in result.stderr
    assert f"trace written to {trace}" in result.stderr


def test_runs_side_by_side_in_one_folder_each_own_their_trace(tmp_path: Path) -> None:
    """A sweep (``for lr in ...; do stepdbg run train.py --lr $lr & done``): each run writes
    a trace of its own, whole, the first under the default name and the others under free
    names that they say; a run told to write a trace that a live run writes stops before
    its script starts."""
    script = str(SCRIPTS / "waits.py")
    command = [sys.executable, "-m", "stepdbg", "run", "--no-live", script]
    sweep = [
        subprocess.Popen(
            [*command, f"run{i}"], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for i in range(3)
    ]
    try:
        for i, process in enumerate(sweep):
            assert process.stdout is not None and process.stdout.readline() == f"run{i} waits\n"
        held = run("run", "-o", "waits.stepdbg.jsonl", script, "late", cwd=tmp_path)  # all three are writing now
    finally:
        (tmp_path / "go").touch()
        ended = [process.communicate(timeout=120) for process in sweep]
    assert (held.returncode, held.stdout) == (2, ""), held.stderr
    [line] = held.stderr.splitlines()
    assert line.startswith("stepdbg: error: cannot write the trace waits.stepdbg.jsonl: another run (pid ")
    assert line.endswith(") is writing it")
    default = tmp_path / "waits.stepdbg.jsonl"
    written = {}
    for i, (process, (_, stderr)) in enumerate(zip(sweep, ended)):
        assert process.returncode == 0, stderr
        trace = Path(stderr.split("trace written to ")[1].split()[0])
        written[trace.name] = i
        lines = records(trace)  # every line whole and valid
        assert (lines[0]["pid"], lines[0]["argv"]) == (process.pid, [script, f"run{i}"]), "the run's own trace"
        assert [r["step"] for r in lines if r["type"] == "step"] == [0, 1, 2, 3]
        assert [r["type"] for r in lines].count("end") == 1 and lines[-1]["status"] == "ok"
        if trace != default:
            assert f"is writing {default}: this run's trace is {trace}" in stderr.splitlines()[0]
    assert sorted(written) == ["waits.1.stepdbg.jsonl", "waits.2.stepdbg.jsonl", "waits.stepdbg.jsonl"]


def test_killed_run_keeps_completed_steps(tmp_path: Path) -> None:
    trace = tmp_path / "killed.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "stepdbg", "run", "-o", str(trace), str(SCRIPTS / "slow_loop.py")],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    printed = 0
    deadline = time.monotonic() + 60
    while printed < 30 and time.monotonic() < deadline:
        if process.stdout.readline().startswith("step"):
            printed += 1
    while not trace.exists() or trace.read_text().count('"type":"step"') < printed:  # flushed as the run goes on
        assert time.monotonic() < deadline + 60, "the steps printed never reached the trace"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    text = trace.read_text()
    whole = text.splitlines()[:-1] if not text.endswith("\n") else text.splitlines()
    lines = [json.loads(line) for line in whole]  # every whole line is valid JSON
    assert lines[0]["type"] == "header"
    assert not any(r["type"] == "end" for r in lines)
    assert len([r for r in lines if r["type"] == "step"]) >= printed
    shown = run("show", str(trace), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "not finished (no end record" in shown.stdout


def end_record(trace: Path) -> dict:
    """The trace's last record, every record before it whole and valid, checked to be its only end record."""
    lines = records(trace)
    assert [r["type"] for r in lines].count("end") == 1 and lines[-1]["type"] == "end", lines[-3:]
    return lines[-1]


def test_sigterm_ends_the_run_and_then_the_process(tmp_path: Path) -> None:
    """As launchers stop jobs: every step before the signal in the trace (none of them waits
    for the writer), an end record, the terminal's scroll region given back, the end-of-run report,
    then the process ended by the signal, as without stepdbg. (SIGHUP: test_termination.py.)"""
    trace = tmp_path / "t.jsonl"
    command = [sys.executable, "-m", "stepdbg", "run", "-o", str(trace), str(SCRIPTS / "signals.py"), "SIGTERM"]
    code, output = run_in_terminal(*command, cwd=tmp_path, env=ENV)
    assert code == -signal.SIGTERM, output[-2000:]
    shown = terminal_lines(output)  # the region was given back
    assert "trained 5 steps" in shown and "not terminated" not in shown
    report = "".join(shown[shown.index("trained 5 steps") + 1 :]).replace(" ", "")  # lines wrapped at the width
    assert report.startswith("stepdbg:5stepsin") and report.endswith(f"tracewrittento{trace}"), report
    assert "stepdbg:terminatedbySIGTERM" in report
    lines = records(trace)
    assert [r["step"] for r in lines if r["type"] == "step"] == [0, 1, 2, 3, 4]
    end = end_record(trace)
    assert (end["status"], end["signal"], end["exit_code"], end["steps"]) == ("terminated", "SIGTERM", 143, 5)


def test_a_scripts_own_sigterm_handler_keeps_the_signal(tmp_path: Path) -> None:
    """A handler the script installs (Lightning's, for Slurm's requeue) wins, also when it calls
    the one it replaced: the script stops when it decides to, and the run ends as it ends."""
    trace = tmp_path / "t.jsonl"
    result = run("run", "--no-live", "-o", str(trace), str(SCRIPTS / "signals.py"), "own-handler", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "stopped cleanly after 4 steps\n"), result.stderr
    assert "terminated" not in result.stderr
    end = end_record(trace)
    assert (end["status"], end["steps"], "signal" in end) == ("ok", 4, False)


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="the script reads its main thread's state in /proc")
def test_sigterm_ends_a_run_whose_main_thread_never_gets_to_the_handler(tmp_path: Path) -> None:
    """A rank blocked in a collective for a rank that died runs no Python signal handler:
    stepdbg's watchdog ends the run, and exits with the signal's exit code."""
    trace = tmp_path / "t.jsonl"
    result = run("run", "--no-live", "-o", str(trace), str(SCRIPTS / "signals.py"), "stuck", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (128 + signal.SIGTERM, ""), result.stderr
    assert "stepdbg: terminated by SIGTERM" in result.stderr
    end = end_record(trace)
    assert (end["status"], end["signal"], end["steps"]) == ("terminated", "SIGTERM", 3)


@pytest.mark.uses(ending_spec("ok"))
def test_trace_is_standard_json_lines(ending: Ending) -> None:
    result, trace = ending("ok")  # --every 1: per-parameter figures in every step
    assert result.returncode == 0
    text = trace.read_text()
    assert "NaN" not in text and "Infinity" not in text
    pandas = pytest.importorskip("pandas")
    frame = pandas.read_json(trace, lines=True)
    assert list(frame[frame.type == "step"].step) == [0, 1]
    if shutil.which("jq"):
        steps = subprocess.run(
            ["jq", "-c", 'select(.type=="step") | .step'], input=text, capture_output=True, text=True, check=True
        )
        assert steps.stdout.split() == ["0", "1"]


ROWS, COLUMNS = 24, 80


def run_in_terminal(*command: str, cwd: Path, env: dict[str, str]) -> tuple[int, bytes]:
    """Run a command with stdout and stderr on one pseudo-terminal: exit code and all it wrote."""
    pty = pytest.importorskip("pty")
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes the command, never returns
        os.chdir(cwd)
        os.execve(command[0], list(command), env)
    set_size(fd, ROWS, COLUMNS)
    output = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), output


def terminal_lines(output: bytes) -> list[str]:
    """What a terminal shows in the end, the lines scrolled off the top included."""
    pyte = pytest.importorskip("pyte")
    screen = pyte.HistoryScreen(COLUMNS, ROWS, history=10_000)
    pyte.ByteStream(screen).feed(output)
    assert screen.margins is None, "the scroll region was not given back"
    return shown_lines(screen)


@pytest.mark.parametrize("color", [True, False], ids=["color", "no-color"])
def test_live_table_leaves_the_scripts_output_intact(tmp_path: Path, color: bool) -> None:
    """The terminal ends up showing exactly what the script alone shows, then stepdbg's
    end-of-run report: nothing erased, moved or duplicated, also for output written around
    sys.stdout (os.write, a subprocess), which a redraw moving up over it would erase."""
    env = {k: v for k, v in ENV.items() if k != "NO_COLOR"} | (
        {"TERM": "xterm-256color"} if color else {"NO_COLOR": "1"}
    )
    script, trace = str(SCRIPTS / "prints_a_lot.py"), tmp_path / "t.jsonl"
    bare_code, bare = run_in_terminal(sys.executable, script, cwd=tmp_path, env=env)
    code, output = run_in_terminal(
        sys.executable, "-m", "stepdbg", "run", "-o", str(trace), script, cwd=tmp_path, env=env
    )
    assert bare_code == code == 0, output[-2000:]
    text = output.decode()
    assert text.count("phase times in ms") >= 3, "the live table was not drawn as the script ran"
    assert "calls (opt 0): zero_grad backward step" in text
    assert ("\x1b[32m" in text) is color  # the green "anomalies: 0": colour only without NO_COLOR
    shown, alone = terminal_lines(output), terminal_lines(bare)
    assert len(alone) == 54 and {"fd 35", "child 35", "progress 100%", "partial done"} <= set(alone), alone
    assert shown[: len(alone)] == alone, shown
    report = "".join(shown[len(alone) :]).replace(" ", "")  # lines wrapped at the terminal's width
    assert report.startswith("stepdbg:60steps") and report.endswith(f"tracewrittento{trace}")
    assert len([r for r in records(trace) if r["type"] == "step"]) == 60


@pytest.mark.parametrize("how", ["multiprocessing", "os-fork"])
def test_forked_children_leave_the_trace_to_the_parent(tmp_path: Path, how: str) -> None:
    """A child forked during the run inherits its hooks and open trace; what it trains
    must not land in the parent's trace, and its exit must not end it or print an end-of-run report."""
    trace = tmp_path / "t.jsonl"
    result = run("run", "--no-live", "-o", str(trace), str(SCRIPTS / "forks.py"), how, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("parent done\n")
    trace_records = records(trace)  # every line whole and valid
    assert [r["type"] for r in trace_records].count("end") == 1 and trace_records[-1]["type"] == "end"
    assert len([r for r in trace_records if r["type"] == "step"]) == 6  # the parent's 3 + 3
    assert result.stderr.count("trace written to") == 1
