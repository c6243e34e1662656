"""The command line's manners, through its console entry point in-process: help that reads
at 80 columns, ``-h``, shell completion, and a mistyped option's close match."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import stepdbg.runner
from stepdbg.session import RunOptions

CLI = Callable[..., tuple[int, str, str]]

COMMANDS = ["", "run", "show", "diff"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_reads_at_80_columns(stepdbg_cli: CLI, command: str) -> None:
    """Each option on a line of its own with its description beside it, as pyinstrument's and
    py-spy's: no 20-column strip of description, no ``<bool>`` after each flag; ``-h`` too."""
    code, out, err = stepdbg_cli(*filter(None, [command]), "--help")
    assert (code, err) == (0, ""), err
    assert max(map(len, out.splitlines())) <= 80, out
    assert "<bool>" not in out and " range>" not in out and "<str>" not in out.split("Options:")[1], out
    assert "  -h, --help " in out
    assert stepdbg_cli(*filter(None, [command]), "-h") == (0, out, "")


def test_run_help_gives_each_option_its_line(stepdbg_cli: CLI) -> None:
    _, out, _ = stepdbg_cli("run", "-h")
    lines = out.splitlines()
    for option, description in [
        ("-o, --trace PATH", "Trace file to write"),
        ("--every N", "Record per-parameter norms"),
        ("--disable RULE[,RULE]", "Comma-separated diagnostic rules"),
        ("--explode-ratio X", "exploding-grad:"),
        ("-q, --quiet", "Print nothing from stepdbg"),
    ]:
        [line] = [line for line in lines if line.startswith(f"  {option} ")]
        assert line.split(option, 1)[1].strip().startswith(description), line


def test_h_after_the_script_is_the_scripts(monkeypatch: pytest.MonkeyPatch, stepdbg_cli: CLI) -> None:
    """``stepdbg run train.py -h`` asks the script for its help, not stepdbg."""
    ran: list[RunOptions] = []
    monkeypatch.setattr(stepdbg.runner, "run_script", lambda options: ran.append(options) or 0)
    assert stepdbg_cli("run", "--strict", "train.py", "-h", "--help") == (0, "", "")
    [options] = ran
    assert (options.target, options.args, options.strict) == ("train.py", ["-h", "--help"], True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--evry", "10", "train.py"], "no such option: --evry (did you mean --every?)"),
        (["--every", "10", "--evry=3", "train.py"], "no such option: --evry (did you mean --every?)"),
        (["--strcit", "train.py", "--evry"], "no such option: --strcit (did you mean --strict?)"),
        (["--no-lve", "train.py"], "no such option: --no-lve (did you mean --no-live?)"),
        (["--bogus", "train.py"], "no such option: --bogus"),
    ],
)
def test_a_mistyped_option_gets_its_close_match(stepdbg_cli: CLI, args: list[str], message: str) -> None:
    """As a mistyped command does (``stepdbg rnu``: did you mean 'run'?); and not a word about
    where options go: it was before the script."""
    assert stepdbg_cli("run", *args) == (2, "", f"stepdbg: error: {message}\n")


def test_shell_completion(monkeypatch: pytest.MonkeyPatch, stepdbg_cli: CLI) -> None:
    """``--install-completion`` installs what the shell calls back: stepdbg's options, commands and formats."""
    _, out, _ = stepdbg_cli("-h")
    assert "--install-completion" in out and "--show-completion" in out
    monkeypatch.setenv("_STEPDBG_COMPLETE", "complete_bash")
    for typed, expected in [
        ("stepdbg run --ev", "--every"),
        ("stepdbg sh", "show"),
        ("stepdbg show t --format j", "json"),
    ]:
        monkeypatch.setenv("COMP_WORDS", typed)
        monkeypatch.setenv("COMP_CWORD", str(len(typed.split()) - 1))
        assert stepdbg_cli()[:2] == (0, f"{expected}\n")
