"""Script runs without paying for ``import torch`` each time: a server process imports
torch once, then forks a child per run, and the child runs the command it is given as a
fresh interpreter would (``python -m stepdbg run ...`` or ``python script.py ...``).

Every script run costs seconds of CPU before its first line: ``import torch``, and the
``torch._dynamo`` import that the first optimizer triggers. Forked after them, a run
costs what stepdbg and the script themselves do. The child is still a process of its
own (its exit code, signals, file descriptors, environment, working directory and
``__main__``), started as Python starts one: ``sys.argv``, ``sys.path[0]`` and the
``__main__`` module as the command line would make them. What it does not repeat is
the interpreter's start-up and those two imports: the tests of start-up itself (how
``stepdbg run`` finds and runs a script, ranks, the README's commands) start real
interpreters (`helpers.run_stepdbg`, `helpers.run_python`, and their own commands).

Run as a script, this file is the server: one JSON request a line on stdin, and on
stdout, for each, ``{"id", "pid"}`` once forked and ``{"id", "returncode"}`` once
ended; on stderr (the client's log file), each run's exit code and CPU time.
`ForkServer` is the client.
"""

from __future__ import annotations

import builtins
import gc
import importlib.machinery
import json
import os
import select
import signal
import subprocess
import sys
import threading
import types
from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

PRELOADED = ("torch", "torch._dynamo")
"""What every run imports before its script does anything: torch (stepdbg imports it),
and Dynamo (the first optimizer built imports it)."""


# ---- the server -------------------------------------------------------------------------


def serve() -> dict[str, Any]:
    """Fork a child per request; return the request in the child (the parent never returns)."""
    for name in PRELOADED:
        __import__(name)
    gc.collect()
    gc.freeze()  # kept out of the children's collections, which would touch (and so copy) every page of them
    children: dict[int, dict[str, Any]] = {}
    pending = b""
    reading = True
    while reading or children:
        if select.select([0] if reading else [], [], [], 0.05)[0]:
            data = os.read(0, 1 << 16)
            reading = bool(data)
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    return request
                children[pid] = request
                _reply(id=request["id"], pid=pid)
        while children:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
            if pid == 0:
                break
            request = children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            cpu = usage.ru_utime + usage.ru_stime
            print(f"exit {code}, {cpu:.2f} s of CPU: {' '.join(request['argv'])}", file=sys.stderr, flush=True)
            _reply(id=request["id"], returncode=code)
    sys.exit(0)


def _reply(**message: Any) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def run_request(request: dict[str, Any]) -> None:
    """In the child: become the process the command line describes, and run it."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, flags in (
        (0, os.devnull, os.O_RDONLY),
        (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
    ):
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins  # type: ignore[attr-defined]
    sys.modules["__main__"] = main
    argv = request["argv"]
    sys.orig_argv = [sys.executable, *argv]
    if argv[0] == "-m":  # python -m MODULE ARGS: argv[0] becomes the module's file, the folder is first
        sys.argv = ["-m", *argv[2:]]
        sys.path[0] = os.getcwd()
        import runpy

        runpy._run_module_as_main(argv[1])  # type: ignore[attr-defined]
        return
    script = argv[0]  # python SCRIPT ARGS: the script's folder is first, the script is __main__
    sys.argv = list(argv)
    sys.path[0] = os.path.dirname(os.path.realpath(script))
    with open(script, "rb") as file:
        code = compile(file.read(), script, "exec", dont_inherit=True)
    loader = importlib.machinery.SourceFileLoader("__main__", script)
    main.__dict__.update(__file__=script, __cached__=None, __loader__=loader, __package__=None, __spec__=None)
    try:
        exec(code, main.__dict__)
    except Exception as error:  # as python prints it: from the script's frame on
        sys.excepthook(type(error), error, error.__traceback__.tb_next if error.__traceback__ else None)
        sys.exit(1)


# ---- the client --------------------------------------------------------------------------


class ForkServer:
    """Runs commands in children of one server process (started on first use; thread-safe)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._env = env
        self._log = log
        self._lock = threading.Lock()
        self._server: subprocess.Popen[bytes] | None = None
        self._started: dict[int, Future[int]] = {}
        self._ended: dict[int, Future[int]] = {}
        self._next_id = 0

    def run(
        self, argv: Iterable[str], cwd: Path, env: dict[str, str], streams: Path, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """``python ARGV...`` (``-m MODULE ...`` or ``SCRIPT ...``) in ``cwd`` with ``env``
        (which must agree with the server's in what Python and torch read at start-up); its
        stdout and stderr go through the files ``streams.stdout`` and ``streams.stderr``."""
        argv = list(argv)
        stdout, stderr = streams.with_suffix(".stdout"), streams.with_suffix(".stderr")
        request = {"argv": argv, "cwd": str(cwd), "env": env, "stdout": str(stdout), "stderr": str(stderr)}
        started, ended = self._send(request)
        pid = started.result(timeout=timeout)
        try:
            code = ended.result(timeout=timeout)
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            raise subprocess.TimeoutExpired([sys.executable, *argv], timeout) from None
        return subprocess.CompletedProcess(
            [sys.executable, *argv], code, stdout.read_text(errors="replace"), stderr.read_text(errors="replace")
        )

    def _send(self, request: dict[str, Any]) -> tuple[Future[int], Future[int]]:
        with self._lock:
            if self._server is None:
                self._start()
            assert self._server is not None and self._server.stdin is not None
            self._next_id += 1
            request["id"] = self._next_id
            started: Future[int] = Future()
            ended: Future[int] = Future()
            self._started[self._next_id], self._ended[self._next_id] = started, ended
            self._server.stdin.write((json.dumps(request) + "\n").encode())
            self._server.stdin.flush()
        return started, ended

    def _start(self) -> None:
        with open(self._log, "ab") as log:
            self._server = subprocess.Popen(
                [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=self._env
            )
        threading.Thread(target=self._read_replies, args=(self._server,), daemon=True).start()

    def _read_replies(self, server: subprocess.Popen[bytes]) -> None:
        assert server.stdout is not None
        for line in server.stdout:
            reply = json.loads(line)
            with self._lock:
                if "pid" in reply:
                    self._started.pop(reply["id"]).set_result(reply["pid"])
                else:
                    self._ended.pop(reply["id"]).set_result(reply["returncode"])
        with self._lock:  # the server is gone: nothing still waiting will end
            for future in (*self._started.values(), *self._ended.values()):
                future.set_exception(RuntimeError(f"the fork server ended (its log: {self._log})"))

    def close(self) -> None:
        """No more requests: the server ends once its children have."""
        with self._lock:
            if self._server is not None and self._server.stdin is not None:
                self._server.stdin.close()


if __name__ == "__main__":
    run_request(serve())
