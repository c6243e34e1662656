"""Run a script exactly as ``python`` would, with stepdbg's instrumentation installed.

Like pyinstrument: ``__name__ == "__main__"`` (a script file in a fresh
``__main__`` module, ``-m`` and directories through ``runpy``), ``__file__``,
``sys.argv`` and ``sys.path[0]`` set as Python sets them and restored afterwards,
the script's exit code passed through. Unlike it, the trace's end record is written on
every path (normal end, ``sys.exit``, an exception, Ctrl-C, SIGTERM), and the user's
traceback is shown without stepdbg's frames.
"""

from __future__ import annotations

import builtins
import importlib.util
import io
import os
import pkgutil
import runpy
import shlex
import sys
import types
from collections.abc import Iterator
from pathlib import Path

from .session import RunOptions, print_exit_message
from .tracing import TracedRun, ranked, trace_paths_for


class ScriptNotFound(Exception):
    """The script or module to run does not exist: the message is the one line the user sees."""


def trace_paths(options: RunOptions) -> Iterator[Path]:
    """Where the trace may go: ``-o PATH`` alone (the rank's own file under a launcher, as
    every rank is given the same options), or ``train.py``'s default names (`trace_paths_for`)."""
    if options.trace is not None:
        return ranked([options.trace])
    return trace_paths_for(options.target.rsplit(".", 1)[-1] if options.module else Path(options.target).stem)


def _resolve(options: RunOptions) -> tuple[str, list[str]]:
    """The path or module to run and its ``sys.argv``, or ScriptNotFound."""
    if options.module:
        saved_path = sys.path[:]
        sys.path.insert(0, os.getcwd())  # where python -m looks first, as the run will (see run_script)
        try:
            spec = importlib.util.find_spec(options.target)
        except (ImportError, ValueError) as e:
            raise ScriptNotFound(f"cannot import module {options.target!r}: {e}") from None
        finally:
            sys.path[:] = saved_path
        if spec is None:
            raise ScriptNotFound(f"no module named {options.target!r}")
        return options.target, [spec.origin or options.target, *options.args]
    path = Path(options.target)
    if not path.exists():
        raise ScriptNotFound(f"no such file: {options.target}")
    if path.is_dir() and not (path / "__main__.py").exists():
        raise ScriptNotFound(f"{options.target} is a directory with no __main__.py")
    return options.target, [options.target, *options.args]


def _user_traceback(error: BaseException) -> types.TracebackType | None:
    """The traceback as python would show it: from the user's first frame on, and without
    stepdbg's frames further down (a hook's wrapper between torch's own frames)."""
    skip = (str(Path(__file__).parent) + os.sep, runpy.__file__, "<frozen runpy>")
    kept = [tb for tb in _frames(error.__traceback__) if not tb.tb_frame.f_code.co_filename.startswith(skip)]
    for tb, following in zip(kept, [*kept[1:], None]):
        tb.tb_next = following
    return kept[0] if kept else None


def _frames(tb: types.TracebackType | None) -> Iterator[types.TracebackType]:
    while tb is not None:
        yield tb
        tb = tb.tb_next


def _run_file(path: str) -> None:
    """Run a script file as ``python path`` does: in a fresh ``__main__`` module, with
    ``__file__`` and its code's path absolute (joined, not normalized: ``./train.py`` runs
    as ``/cwd/./train.py``) and ``sys.argv[0]`` left as typed. runpy's ``run_path`` keeps
    a relative path relative and sets ``sys.argv[0]`` to the path it is given."""
    with io.open_code(path) as file:
        code = pkgutil.read_code(file)  # a compiled .pyc, as runpy allows
    if code is None:
        with io.open_code(path) as file:
            code = compile(file.read(), path, "exec", dont_inherit=True)
    main = types.ModuleType("__main__")
    main.__dict__.update(
        __file__=path, __cached__=None, __loader__=None, __package__=None, __spec__=None, __builtins__=builtins
    )
    # left in place afterwards, as python leaves it: the script's threads still running and its
    # atexit handlers pickle the classes it defined (a checkpoint saved in the background)
    sys.modules["__main__"] = main
    exec(code, main.__dict__)


def run_script(options: RunOptions) -> int:
    """Run the script under instrumentation; return the exit code stepdbg should exit with."""
    target, argv = _resolve(options)
    command = shlex.join(options.command or ["stepdbg", "run", target, *options.args])
    run = TracedRun(options, argv, command, trace_paths(options), strict_line=True)
    run.start()

    saved_argv, saved_path0 = sys.argv[:], sys.path[0] if sys.path else None
    error: BaseException | None = None
    sys.argv[:] = argv
    # As python does: sys.path[0] is the script's folder, a directory's own path, or for -m the
    # current directory, and absolute (runpy also puts a directory first, as typed).
    script = os.path.join(os.getcwd(), target)
    if options.module:
        path0 = os.getcwd()
    else:
        path0 = script if os.path.isdir(script) else os.path.dirname(os.path.realpath(script))  # a link's target's
    if sys.path:
        sys.path[0] = path0
    else:
        sys.path.insert(0, path0)
    try:
        if options.module:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        elif os.path.isfile(script):
            _run_file(script)
        else:  # a directory or zip file with a __main__.py
            runpy.run_path(target, run_name="__main__")
    except BaseException as raised:
        error = raised
    finally:
        run.stop()
        sys.argv[:] = saved_argv
        if saved_path0 is not None:
            sys.path[0] = saved_path0
    if isinstance(error, SystemExit):
        print_exit_message(error)
    elif error is not None:
        error.__traceback__ = _user_traceback(error)  # the default hook prints the exception's own
        sys.excepthook(type(error), error, error.__traceback__)
    run.finish(error)
    return run.exit_code
