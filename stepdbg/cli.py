"""The command line: parses options and calls the library. Nothing else lives here."""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

try:  # typer >= 0.20 carries its own click; its usage errors derive from TyperException
    from typer import TyperException as CommandLineError
except ImportError:  # pragma: no cover - older typer, on click
    from click.exceptions import ClickException as CommandLineError  # type: ignore[assignment]

from . import __version__, exit_codes
from .renderers import DEFAULT_FORMAT, DIFF_FORMATS, SHOW_FORMATS
from .rules import IDS as RULE_IDS
from .rules import Thresholds
from .tracefile import TraceError

app = typer.Typer(
    name="stepdbg",
    help="A debugger and profiler for PyTorch training steps: zero_grad, backward and step, made visible.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # click's plain help, as pyinstrument's and py-spy's: a line per option, its description
    # wrapped beside it; rich's panels give descriptions a 20-column strip at 80 columns
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def fail(message: str, code: int = exit_codes.USAGE) -> typer.Exit:
    """Print one ``stepdbg: error:`` line on stderr and return the Exit to raise (a line break
    in a name the message quotes, a file's or a parameter's, is written as ``\\n``)."""
    one_line = message.replace("\r", "\\r").replace("\n", "\\n")
    print(f"stepdbg: error: {one_line}", file=sys.stderr)
    return typer.Exit(code)


def _version_callback(value: bool) -> None:
    if value:
        print(f"stepdbg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """stepdbg: trace every zero_grad, backward and step of a training script."""


def _parse_names(value: str | None, valid: Sequence[str], what: str, option: str) -> frozenset[str]:
    """A comma-separated list of ``valid`` names; any other is a usage error that lists them."""
    if not value:
        return frozenset()
    names = {name.strip() for name in value.split(",") if name.strip()}
    unknown = sorted(names - set(valid))
    if unknown:
        raise fail(f"unknown {what} {', '.join(unknown)} for {option} (valid: {', '.join(valid)})")
    return frozenset(names)


def _format_option(formats: Sequence[str]) -> typer.models.OptionInfo:
    """``--format NAME``, one of ``formats``: the names of the command's renderers."""
    return typer.Option(
        "--format",
        metavar="FORMAT",
        show_default=False,
        autocompletion=lambda: list(formats),
        help=f"Output format: {', '.join(formats)} (default: {DEFAULT_FORMAT}).",
    )


def _chosen_format(chosen: str | None, aliases: dict[str, str | None], formats: Sequence[str]) -> str:
    """The format ``--format`` names, or the one alias flag given (``--json``: json), or the
    default; a format no renderer has, or two that disagree, is a usage error."""
    if chosen is not None and chosen not in formats:
        raise fail(f"unknown format {chosen} for --format (valid: {', '.join(formats)})")
    flags = [flag for flag, name in aliases.items() if name is not None]
    if len(flags) > 1:
        raise fail(f"{' and '.join(flags)} cannot be used together")
    if flags and chosen is not None and chosen != aliases[flags[0]]:
        raise fail(f"{flags[0]} and --format {chosen} cannot be used together")
    return chosen or (aliases[flags[0]] if flags else None) or DEFAULT_FORMAT


def _no_such_option(ctx: typer.Context, typed: str) -> str:
    """The usage error for an option the command does not have, with its closest own option
    if one is close (as click suggests a mistyped command): ``--evry`` -> ``--every``."""
    name = typed.split("=", 1)[0]
    known = [opt for param in ctx.command.get_params(ctx) for opt in (*param.opts, *param.secondary_opts)]
    close = difflib.get_close_matches(name, [opt for opt in known if opt.startswith("-")], n=1)
    return f"no such option: {name}" + (f" (did you mean {close[0]}?)" if close else "")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "allow_interspersed_args": False},
)
def run(
    ctx: typer.Context,
    script: Annotated[
        str,
        typer.Argument(
            metavar="SCRIPT [ARGS]...",
            help="The training script (or, with -m, the module) to run, and its arguments.",
            show_default=False,
        ),
    ],
    module: Annotated[bool, typer.Option("-m", "--module", help="Run SCRIPT as a module, like python -m.")] = False,
    trace: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--trace",
            metavar="PATH",
            help="Trace file to write; one that a live run writes is an error. Default: SCRIPT.stepdbg.jsonl"
            " in the current directory, or SCRIPT.1.stepdbg.jsonl... while another run writes it.",
        ),
    ] = None,
    every: Annotated[
        int,
        typer.Option(
            metavar="N",
            help="Record per-parameter norms and update sizes every N steps (0: never). "
            "Global figures are recorded every step.",
            min=0,
        ),
    ] = 50,
    live: Annotated[bool, typer.Option("--live/--no-live", help="Show the live table while the script runs.")] = True,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print nothing from stepdbg except errors and why --strict fails.")
    ] = False,
    disable: Annotated[
        str | None,
        typer.Option(metavar="RULE[,RULE]", help="Comma-separated diagnostic rules to turn off.", show_default=False),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 3 when the script succeeded but a warning or error was found.")
    ] = False,
    explode_ratio: Annotated[
        float,
        typer.Option(
            metavar="X", help="exploding-grad: the global norm is this many times its recent average.", min=1.0
        ),
    ] = Thresholds.explode_ratio,
    vanish_ratio: Annotated[
        float,
        typer.Option(
            metavar="X", help="vanishing-grad: a parameter's norm below this fraction of the largest.", min=0.0
        ),
    ] = Thresholds.vanish_ratio,
    patience: Annotated[
        int,
        typer.Option(metavar="N", help="Steps a condition must last before unused-param or zero-update fire.", min=1),
    ] = Thresholds.patience,
) -> None:
    """Run a script under stepdbg: stepdbg run train.py --lr 3e-4

    Everything after SCRIPT goes to the script, unchanged (-h included). The trace is written as
    the run goes; stepdbg's own output goes to stderr.
    """
    from .runner import ScriptNotFound, run_script
    from .session import RunOptions, TraceNotWritable

    if script.startswith("-"):  # not the script: an option before it that run does not have
        raise fail(_no_such_option(ctx, script))
    if trace is not None and str(trace) == "-":
        raise fail("the trace cannot go to stdout (-o -): stdout is the script's; give a file name")
    options = RunOptions(
        target=script,
        args=list(ctx.args),
        module=module,
        trace=trace,
        every=every,
        live=live and not quiet,
        quiet=quiet,
        disabled=_parse_names(disable, RULE_IDS, "rule", "--disable"),
        strict=strict,
        thresholds=Thresholds(explode_ratio=explode_ratio, vanish_ratio=vanish_ratio, patience=patience),
        command=["stepdbg", *sys.argv[1:]],
    )
    try:
        code = run_script(options)
    except (ScriptNotFound, TraceNotWritable) as e:
        raise fail(str(e)) from None
    raise typer.Exit(code)


@app.command()
def show(
    traces: Annotated[
        list[Path],
        typer.Argument(
            metavar="TRACE",
            help="A trace written by stepdbg run; several: the ranks of one distributed run, side by side.",
            show_default=False,
        ),
    ],
    steps: Annotated[
        str | None, typer.Option(metavar="A:B", help="Only steps A:B (Python slice of step numbers, e.g. 100:200).")
    ] = None,
    optimizer: Annotated[int | None, typer.Option(metavar="N", help="Only this optimizer (its index).")] = None,
    param: Annotated[
        str | None,
        typer.Option(metavar="GLOB", help="Per-parameter norms over the steps for names matching this glob pattern."),
    ] = None,
    anomalies: Annotated[bool, typer.Option("--anomalies", help="Only the anomalies.")] = False,
    output_format: Annotated[str | None, _format_option(list(SHOW_FORMATS))] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Same as --format csv.")] = False,
) -> None:
    """Show a trace: the run, its optimizers, time per phase, memory, sparklines, anomalies;
    several: the ranks of one run side by side."""
    from .show import ShowOptions, show_ranks, show_trace

    chosen = _chosen_format(
        output_format, {"--json": "json" if as_json else None, "--csv": "csv" if as_csv else None}, list(SHOW_FORMATS)
    )
    options = ShowOptions(steps=steps, optimizer=optimizer, param=param, anomalies_only=anomalies, format=chosen)
    try:
        if len(traces) == 1:
            show_trace(traces[0], options)
        else:
            show_ranks(traces, options)
    except (TraceError, ValueError) as e:
        raise fail(str(e)) from None


@app.command()
def diff(
    a: Annotated[Path, typer.Argument(metavar="A", help="The reference trace.", show_default=False)],
    b: Annotated[Path, typer.Argument(metavar="B", help="The trace to compare with it.", show_default=False)],
    rtol: Annotated[float, typer.Option(metavar="X", help="Relative tolerance for numbers.")] = 1e-5,
    atol: Annotated[float, typer.Option(metavar="X", help="Absolute tolerance for numbers.")] = 1e-8,
    output_format: Annotated[str | None, _format_option(list(DIFF_FORMATS))] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing; only the exit code tells.")] = False,
    ignore: Annotated[
        list[str] | None,
        typer.Option(
            metavar="FIELD[,FIELD]",
            help="Step fields not to compare, e.g. loss for two DDP ranks (different batches, same gradients); may be repeated.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Compare two runs step by step and say where they part.

    Exit codes as diff(1): 0 the runs agree, 1 they differ, 2 trouble.
    """
    from .diff import DiffOptions, diff_traces
    from .diff_compare import FIELDS

    if not (rtol >= 0 and atol >= 0):  # NaN fails both
        raise fail("--rtol and --atol must be numbers >= 0")
    ignored = _parse_names(",".join(ignore or []), FIELDS, "field", "--ignore")
    chosen = _chosen_format(output_format, {"--json": "json" if as_json else None}, list(DIFF_FORMATS))
    options = DiffOptions(rtol=rtol, atol=atol, format=chosen, quiet=quiet, ignore=ignored)
    try:
        code = diff_traces(a, b, options)
    except (TraceError, ValueError) as e:
        raise fail(str(e)) from None
    raise typer.Exit(code)


@app.command()
def plot(
    traces: Annotated[
        list[Path],
        typer.Argument(
            metavar="TRACE", help="Traces written by stepdbg run: one run, or several to overlay.", show_default=False
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--out",
            metavar="PATH",
            show_default=False,
            help="The figure: .png, .svg or .pdf. Default: beside the (first) trace, .png.",
        ),
    ] = None,
    steps: Annotated[str | None, typer.Option(metavar="A:B", help="Only steps A:B (as in show).")] = None,
    optimizer: Annotated[int | None, typer.Option(metavar="N", help="Only this optimizer (its index).")] = None,
    param: Annotated[
        str | None,
        typer.Option(
            metavar="GLOB", help="The heat map shows the parameters matching this glob (default: every layer)."
        ),
    ] = None,
) -> None:
    """Draw a run's dashboard: loss, grad norms, lr, update sizes, time per phase, per-layer heat map, anomalies."""
    from .extras import MissingExtra
    from .plot import PlotOptions, plot_traces

    try:
        written = plot_traces(traces, PlotOptions(out=out, steps=steps, optimizer=optimizer, param=param))
    except (TraceError, ValueError, MissingExtra) as e:
        raise fail(str(e)) from None
    except OSError as e:
        raise fail(f"cannot write {e.filename or out}: {e.strerror or e}") from None
    print(f"stepdbg: wrote {written}", file=sys.stderr)


class ExportFormat(str, Enum):
    perfetto = "perfetto"
    tensorboard = "tensorboard"
    csv = "csv"


@app.command()
def export(
    traces: Annotated[
        list[Path],
        typer.Argument(
            metavar="TRACE", help="Traces written by stepdbg run (the ranks of one run, say).", show_default=False
        ),
    ],
    to: Annotated[
        ExportFormat,
        typer.Option(
            help="perfetto: a timeline for ui.perfetto.dev; tensorboard: event files; csv: show --csv's table."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--out",
            metavar="PATH",
            show_default=False,
            help="The file (perfetto, csv) or log directory (tensorboard). Default: beside the trace; csv to stdout.",
        ),
    ] = None,
    steps: Annotated[str | None, typer.Option(metavar="A:B", help="Only steps A:B (as in show).")] = None,
    optimizer: Annotated[int | None, typer.Option(metavar="N", help="Only this optimizer (its index).")] = None,
    param: Annotated[
        str | None, typer.Option(metavar="GLOB", help="Only parameters matching this glob (tensorboard, csv).")
    ] = None,
) -> None:
    """Export traces for other tools: Perfetto / chrome://tracing, TensorBoard, CSV."""
    from .export import ExportOptions, export_traces
    from .extras import MissingExtra

    options = ExportOptions(to=to.value, out=out, steps=steps, optimizer=optimizer, param=param)
    try:
        written = export_traces(traces, options)
    except (TraceError, ValueError, MissingExtra) as e:
        raise fail(str(e)) from None
    except OSError as e:
        if e.filename is None:
            raise  # stdout: main() says it (a closed pipe, click does)
        raise fail(f"cannot write {e.filename}: {e.strerror or e}") from None
    for path in written:
        print(f"stepdbg: wrote {path}", file=sys.stderr)
    if to is ExportFormat.perfetto and written:
        print("stepdbg: open it at https://ui.perfetto.dev (or chrome://tracing)", file=sys.stderr)
    elif to is ExportFormat.tensorboard and written:
        print(f"stepdbg: tensorboard --logdir {written[0].parent}", file=sys.stderr)


def main() -> None:
    """Console entry point: usage errors are one line and exit 2, never a traceback."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=sys.argv[1:], prog_name="stepdbg", standalone_mode=False)
    except CommandLineError as e:
        if type(e).__name__ == "NoArgsIsHelpError":
            print(e.format_message(), file=sys.stderr)  # bare `stepdbg`: the help
        else:
            print(f"stepdbg: error: {e.format_message()}", file=sys.stderr)
        code = exit_codes.USAGE
    except typer.Abort:
        code = exit_codes.INTERRUPTED
    except OSError as e:  # the output could not be written (a full disk; click handles a closed pipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        print(f"stepdbg: error: cannot write the output ({e.strerror or e})", file=sys.stderr)
        code = exit_codes.USAGE
    sys.exit(code if isinstance(code, int) else 0)
