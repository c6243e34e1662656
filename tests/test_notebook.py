"""examples/notebook.ipynb executed in a real Jupyter kernel, as a user runs it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from helpers import anomalies, end, read_trace

NOTEBOOK = Path(__file__).parent.parent / "examples" / "notebook.ipynb"
TABLE_TITLE = "stepdbg · phase times in ms"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def shown(output: Any) -> str:
    """What an output shows as text, colours left out."""
    text = output.get("text") or output.get("data", {}).get("text/plain", "")
    return ANSI.sub("", text)


def test_the_example_notebook_in_a_kernel(tmp_path: Path) -> None:
    """The live table is one output per traced cell, updated in place to the last step; the
    bug is named at step 1 in the cell and in its trace; the trace loads into pandas."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # a cell that raises fails the test here
    traced = [cell for cell in notebook.cells if cell.cell_type == "code" and "stepdbg.trace(" in cell.source]
    assert len(traced) == 2
    for cell in traced:
        texts = [shown(output) for output in cell.outputs]
        tables = [text for text in texts if TABLE_TITLE in text]
        assert len(tables) == 1, texts
        assert re.search(r"^\s+0\s+19\s", tables[0], re.MULTILINE), tables[0]  # opt 0, step 19: the final state
        assert len(cell.outputs) <= 4, texts  # the table, an anomaly, the end-of-run report, the cell's value

    correct, buggy = ("\n".join(shown(output) for output in cell.outputs) for cell in traced)
    assert "stepdbg: 20 steps in" in correct and "stepdbg: no anomalies" in correct
    assert "error missing-zero-grad (step 1, optimizer 0)" in buggy and "(first: 0.weight)" in buggy
    assert "[('missing-zero-grad', 1, '0.weight')]" in buggy
    records = read_trace(tmp_path / "buggy.stepdbg.jsonl")
    assert [(a["rule"], a["step"]) for a in anomalies(records)] == [("missing-zero-grad", 1)]
    assert end(records)["steps"] == 20 and records[0]["command"] == "stepdbg.trace() in a Jupyter kernel"
    frame = shown(notebook.cells[-1].outputs[0])
    assert frame.split()[:4] == ["step", "loss", "grad_norm", "calls"]
