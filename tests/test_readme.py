"""The README stays true: its commands run and print what it shows, its rule table is
the rules', and the links in it and in docs/ lead somewhere.

The README's shell commands come in two kinds. The Quick start's ```sh block holds
two set-up commands, each making a fresh virtual environment: CI runs the second
verbatim (.ci/run), and here the stepdbg command that ends the first one runs. Every
```console block is the tour: each ``$ `` line is a stepdbg command, followed by what
it printed at 80 columns. The commands run in one folder holding a copy of
examples/, and every line the README shows must come out again, numbers, times, sizes
and paths aside (they change from machine to machine and run to run), or be part of a
line that does (a terminal wraps a long line that a pipe gets whole). A line ``…``
stands for lines the README leaves out; lines stepdbg prints only sometimes (a
progress line every few seconds when stderr is not a terminal) may come in between.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from helpers import RUN_TIMEOUT, script_env

from stepdbg.rules import RULES

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
ELIDED = ("", "…")
"""A tour line that stands for no printed line."""
MAX_WORDS = 2200
"""The README is a front door: the depth lives in docs/."""


@dataclass
class Block:
    section: str
    language: str
    lines: list[str]


def blocks(text: str) -> list[Block]:
    """The fenced code blocks of a markdown text, with the ``##`` section each is in."""
    found: list[Block] = []
    section = ""
    current: Block | None = None
    for line in text.splitlines():
        if current is not None:
            if line.startswith("```"):
                found.append(current)
                current = None
            else:
                current.lines.append(line)
        elif line.startswith("```"):
            current = Block(section, line[3:].strip(), [])
        elif line.startswith("## "):
            section = line[3:].strip()
    return found


def quick_start_commands() -> list[str]:
    block = next(b for b in blocks(README.read_text()) if b.section == "Quick start" and b.language == "sh")
    return [line for line in block.lines if line.strip() and not line.lstrip().startswith("#")]


@dataclass
class Command:
    line: str
    shown: list[str]
    """What the README shows it printed."""

    @property
    def exit_code(self) -> int:
        """0, or the code the output itself names (diff's last line: ``The runs differ (exit 1)``)."""
        named = re.search(r"\(exit (\d+)\)", "\n".join(self.shown))
        return int(named.group(1)) if named else 0


def tour() -> list[Command]:
    commands: list[Command] = []
    for block in blocks(README.read_text()):
        if block.language != "console":
            continue
        for line in block.lines:
            if line.startswith("$ "):
                commands.append(Command(line[2:], []))
            else:
                assert commands, f"output before any command in a console block: {line!r}"
                commands[-1].shown.append(line)
    return commands


def normalized(line: str) -> str:
    """A printed line without what changes from run to run: numbers, times, sizes, paths, sparklines, widths."""
    line = re.sub(r"/\S*\.stepdbg\.jsonl", "PATH", line)
    line = re.sub(r"\d+(?:\.\d+)*(?:e[-+]?\d+)?(?:\+\w+)?", "#", line)
    line = re.sub(r"#\s?(?:µs|ms|s|min|h|B|KiB|MiB|GiB|TiB)\b", "#", line)
    line = re.sub(r"(?:#× (?:slower|faster)|same)$", "RATIO", line.rstrip())
    line = re.sub(r"[▁▂▃▄▅▆▇█]+", "▁", line)
    line = re.sub(r"─+", "─", line)
    return " ".join(line.split())


def run(command: str, cwd: Path) -> subprocess.Popen[str]:
    """Start a README command as a user types it, at 80 columns; no GPU in sight, so
    that the trace's device is the README's ``cpu`` on any machine."""
    argv = shlex.split(command)
    assert argv[0] == "stepdbg", f"the README's commands are stepdbg commands: {command!r}"
    return subprocess.Popen(
        [sys.executable, "-m", "stepdbg", *argv[1:]],
        cwd=cwd,
        env=script_env({"COLUMNS": "80", "CUDA_VISIBLE_DEVICES": ""}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[str, str, int]:
    stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
    return stdout, stderr, process.returncode


def test_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    commands = quick_start_commands()
    assert len(commands) == 2, commands
    first, second = commands
    assert "pip install" in first and first.endswith("&& stepdbg run examples/train.py"), first
    assert second in (ROOT / ".ci" / "run").read_text().splitlines(), "CI runs the README's test command verbatim"


def test_readme_commands_run_and_print_what_the_readme_shows(tmp_path: Path) -> None:
    """One test, so that the runs happen once: the scripts first, side by side (each
    writes a trace of its own), then the commands that read their traces, in order."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    quick_start = Command(quick_start_commands()[0].rpartition("&& ")[2], [])
    commands = [quick_start, *tour()]
    scripts = {i: run(c.line, tmp_path) for i, c in enumerate(commands) if c.line.startswith("stepdbg run ")}
    results = {i: finish(process) for i, process in scripts.items()}
    for i, command in enumerate(commands):
        if i not in results:
            results[i] = finish(run(command.line, tmp_path))
    for i, command in enumerate(commands):
        stdout, stderr, code = results[i]
        assert code == command.exit_code, f"$ {command.line}\nexit {code}\n{stdout}{stderr}"
        printed = [normalized(line) for line in (stdout + stderr).splitlines()]
        missing = [
            line
            for line in command.shown
            if line.strip() not in ELIDED and not any(normalized(line) in whole for whole in printed)
        ]
        gone = "\n".join(missing)
        assert not missing, f"$ {command.line}\nshown, not printed:\n{gone}\n--- printed:\n{stdout}{stderr}"


def test_rule_table_lists_every_rule_in_one_line() -> None:
    rows = re.findall(r"^\| `([a-z-]+)` \| (\w+) \| (.+) \|$", README.read_text(), re.MULTILINE)
    assert rows == [(rule.id, rule.severity, rule.summary) for rule in RULES]
    assert all(len(summary.split()) <= 25 for _, _, summary in rows), "the full condition goes to docs/rules.md"


def test_rules_doc_has_each_rule_as_the_registry_has_it() -> None:
    """docs/rules.md's table lists the rules; each rule's section opens with its severity (and
    a graver one it may grow to) and condition, and gives its hint (code in backticks there,
    plain in the terminal)."""
    text = (ROOT / "docs" / "rules.md").read_text()
    rows = re.findall(r"^\| \[`([a-z-]+)`\]\(#\1\) \| ([\w, ]+) \|$", text, re.MULTILINE)
    assert rows == [(rule.id, rule.severity + (f", or {rule.graver[0]}" if rule.graver else "")) for rule in RULES]
    sections = {
        heading: " ".join(body.split())
        for heading, body in re.findall(r"^## `([a-z-]+)`\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    }
    for rule in RULES:
        severity = rule.severity + (f", or {rule.graver[0]} {rule.graver[1]}" if rule.graver else "")
        opening = " ".join(f"**{severity}.** {rule.condition}".split())
        section = sections.get(rule.id, "")
        assert section.startswith(opening), f"{rule.id}: docs/rules.md does not open with the rule's condition"
        assert f"Hint: {rule.hint}." in section.replace("`", ""), f"{rule.id}: docs/rules.md gives another hint"


def test_readme_is_a_front_door() -> None:
    assert len(README.read_text().split()) <= MAX_WORDS


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a markdown file's headings."""
    found: set[str] = set()
    for block_free in _prose(path.read_text()):
        heading = re.match(r"#{1,6} (.+)", block_free)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            anchor, n = slug, 0
            while anchor in found:
                n += 1
                anchor = f"{slug}-{n}"
            found.add(anchor)
    return found


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def test_links_in_readme_and_docs_resolve() -> None:
    broken = []
    for doc in (README, *DOCS):
        for line in _prose(doc.read_text()):
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"[a-z]+:", target):
                    continue  # a web address
                path, _, anchor = target.partition("#")
                linked = (doc.parent / path) if path else doc
                if not linked.exists() or (anchor and anchor not in anchors(linked)):
                    broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert broken == []
