"""How fast `stepdbg show`, `diff`, `plot` and `export` read a long trace, and in how much memory.

Writes a real-looking 100,000-step trace (a GAN's discriminator and generator plus an
auxiliary head: three optimizers of 20 parameters, per-parameter detail every 10
steps, each step's calls placed in time, a few anomalies, an end record) the way
`stepdbg run` writes one, then times the real commands in fresh processes (best of
3) and prints seconds and peak RSS::

    python benchmarks/trace_bench.py [--steps 100000] [--keep DIR]

Peak RSS comes from ``os.wait4`` (the rusage of that one child process), so
it is the command's own high-water mark; a run over a tenth of the steps shows
whether it grows with the trace.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stepdbg.schema import Anomaly, EndRecord, Header, OptimizerInfo, ParamGroupInfo, StepRecord  # noqa: E402
from stepdbg.tracefile import TraceWriter  # noqa: E402

EVERY = 10
OPTIMIZERS = (("Adam", "disc"), ("Adam", "gen"), ("SGD", "aux"))
TARGET_S = 3.0


def param_names(prefix: str) -> list[str]:
    return [f"{prefix}.layers.{i}.{kind}" for i in range(10) for kind in ("weight", "bias")]


def write_trace(path: Path, steps: int, seed: int = 0, lr_change_at: int | None = None) -> None:
    """A trace of ``steps`` step records over three interleaved optimizers.

    ``lr_change_at`` halves optimizer 1's learning rate from that step on, so that
    a diff of two traces has something to find and then reads to the end.
    """
    rng = random.Random(seed)
    writer = TraceWriter(path)
    names = [param_names(prefix) for _, prefix in OPTIMIZERS]
    writer.write(
        Header(
            stepdbg="0.1.0",
            torch="2.13.0",
            python="3.12.0",
            argv=["train_gan.py"],
            command="stepdbg run train_gan.py --epochs 50",
            cwd="/work",
            start="2025-01-01T00:00:00+00:00",
            device="cpu",
            every=EVERY,
            pid=1234,
        ).to_json()
    )
    t = 0.0
    totals = dict.fromkeys(("forward", "backward", "step", "zero_grad", "total"), 0.0)
    for index in range(steps):
        opt, step = index % len(OPTIMIZERS), index // len(OPTIMIZERS)
        if step == 0:
            groups = [ParamGroupInfo(params=names[opt], numel=1_000_000)]
            writer.write(OptimizerInfo(optimizer=opt, cls=OPTIMIZERS[opt][0], groups=groups).to_json())
        times = {
            "forward": rng.lognormvariate(-5.0, 0.2),
            "backward": rng.lognormvariate(-4.5, 0.2),
            "step": rng.lognormvariate(-6.0, 0.2),
            "zero_grad": rng.lognormvariate(-9.0, 0.2),
        }
        times["total"] = sum(times.values())
        spans = [  # zero_grad, forward, backward, step, as `stepdbg run` places them
            "zero_grad",
            0.0,
            times["zero_grad"],
            "backward",
            times["zero_grad"] + times["forward"],
            times["backward"],
            "step",
            times["total"] - times["step"],
            times["step"],
        ]
        t += times["total"]
        for phase, value in times.items():
            totals[phase] += value
        lr = 3e-4 * (0.5 + 0.5 * math.cos(math.pi * step / (steps / 3)))
        if opt == 1 and lr_change_at is not None and step >= lr_change_at:
            lr /= 2
        grad_norm = rng.lognormvariate(0.0, 0.3) * (25.0 if step == 1500 else 1.0)
        record = StepRecord(
            optimizer=opt,
            step=step,
            t=t,
            calls=["zero_grad", "backward", "step"],
            backward_calls=1,
            skipped=False,
            loss=2.0 * math.exp(-step / 5000) + rng.gauss(0.0, 0.05),
            grad_norm=grad_norm,
            group_grad_norms=[grad_norm],
            lr=[lr],
            time=times,
            spans=spans,
        )
        if step % EVERY == 0:
            record.param_grad_norms = {name: rng.lognormvariate(-2.0, 1.0) for name in names[opt]}
            record.update_ratio = rng.lognormvariate(-7.0, 0.3)
            record.param_update_ratios = {name: rng.lognormvariate(-7.0, 0.5) for name in names[opt]}
        writer.write_step(record)  # as `stepdbg run` writes them
        if opt == 0 and step == 1500:
            writer.write(
                Anomaly(
                    rule="exploding-grad",
                    severity="warning",
                    step=step,
                    optimizer=0,
                    param=None,
                    message=f"grad norm {grad_norm:.3g} is 25x its recent average",
                    hint="lower the learning rate or clip gradients",
                    t=t,
                ).to_json()
            )
        if opt == 2 and step == 200:
            writer.write(
                Anomaly(
                    rule="unused-param",
                    severity="info",
                    step=step,
                    optimizer=2,
                    param=names[2][-1],
                    message=f"{names[2][-1]} has had no gradient for 100 steps",
                    hint="freeze it or remove it",
                    t=t,
                ).to_json()
            )
    writer.write(
        EndRecord(
            status="ok",
            exit_code=0,
            duration=t + 1.0,
            steps=steps,
            anomalies={"exploding-grad": 3, "unused-param": 1},
            time=totals,
        ).to_json()
    )
    writer.close()


def measure(args: list[str], repeat: int, output: Path | None = None) -> tuple[float, float, float]:
    """Best wall time and best CPU time of ``python -m stepdbg ARGS``, and its peak RSS in MiB.

    CPU time (user + system) is there because wall time on a shared machine counts
    other processes' turns too. ``output`` (a file or folder the command writes) is
    removed before each run: a TensorBoard export refuses a folder holding events.
    """
    best = best_cpu = math.inf
    peak = 0.0
    for _ in range(repeat):
        if output is not None and output.is_dir():
            shutil.rmtree(output)
        with tempfile.TemporaryFile() as stderr:
            start = time.perf_counter()
            child = subprocess.Popen(
                [sys.executable, "-m", "stepdbg", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr
            )
            _, status, usage = os.wait4(child.pid, 0)
            best = min(best, time.perf_counter() - start)
            best_cpu = min(best_cpu, usage.ru_utime + usage.ru_stime)
            child.returncode = os.waitstatus_to_exitcode(status)
            if child.returncode not in (0, 1):
                stderr.seek(0)
                raise SystemExit(f"stepdbg {' '.join(args)} failed ({child.returncode}):\n{stderr.read().decode()}")
        peak = max(peak, usage.ru_maxrss / 1024)  # KiB on Linux
    return best, best_cpu, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000, help="step records in the big trace")
    parser.add_argument("--repeat", type=int, default=3, help="runs per command; the best counts")
    parser.add_argument("--keep", type=Path, help="write the traces here and keep them")
    args = parser.parse_args()

    folder = args.keep or Path(tempfile.mkdtemp(prefix="stepdbg-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        rows = []
        for steps in (args.steps // 10, args.steps):
            a, b, c = (folder / f"{name}{steps}.stepdbg.jsonl" for name in "abc")
            write_trace(a, steps)
            write_trace(b, steps, lr_change_at=steps // 6)
            write_trace(c, steps, seed=1)
            size = a.stat().st_size / 2**20
            figure, timeline, logdir = folder / f"a{steps}.png", folder / f"a{steps}.json", folder / f"runs{steps}"
            for label, command, output in (
                ("show", ["show", str(a)], None),
                ("show --json", ["show", "--json", str(a)], None),
                ("show --csv", ["show", "--csv", str(a)], None),
                ("diff (identical)", ["diff", str(a), str(a)], None),
                ("diff (lr change)", ["diff", str(a), str(b)], None),
                ("diff (all differ)", ["diff", str(a), str(c)], None),
                ("plot", ["plot", str(a), "-o", str(figure)], None),
                ("plot (two runs)", ["plot", str(a), str(b), "-o", str(figure)], None),
                ("export perfetto", ["export", str(a), "--to", "perfetto", "-o", str(timeline)], None),
                ("export tensorboard", ["export", str(a), "--to", "tensorboard", "-o", str(logdir)], logdir),
            ):
                rows.append((label, steps, size, *measure(command, args.repeat, output)))
    finally:
        if args.keep is None:
            shutil.rmtree(folder)

    print(f"{'command':<19} {'steps':>8} {'trace MiB':>9} {'wall s':>7} {'CPU s':>6} {'peak RSS MiB':>12}")
    for label, steps, size, seconds, cpu, rss in rows:
        flag = "" if seconds < TARGET_S else f"  (over {TARGET_S:g} s)"
        print(f"{label:<19} {steps:>8} {size:>9.1f} {seconds:>7.2f} {cpu:>6.2f} {rss:>12.0f}{flag}")


if __name__ == "__main__":
    main()
