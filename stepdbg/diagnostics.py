"""The diagnostic rules: name a training-loop bug at the step where it first happens.

The ordering rules (missing-zero-grad, zero-grad-before-step,
step-without-backward, scheduler-before-step) are decided by the collector from
gradient *state* and report here; the numeric rules are judged here from each
finished step record, reusing the norms already computed; input-bound and
memory-growth judge the run's steps together, whatever optimizer made them.
Each problem is reported once per rule and optimizer (once per run for those
two), then only counted, and where it fired is written as stretches of steps
(`AnomalySteps`), not a record per repeat.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from .data_wait import LoaderSettings
from .memory import MEASURES, fmt_bytes, step_memory
from .schema import SEVERITIES, Anomaly, AnomalySteps, StepRecord


@dataclass(frozen=True)
class Rule:
    severity: str
    hint: str


RULES: dict[str, Rule] = {
    "missing-zero-grad": Rule(
        "error",
        "call optimizer.zero_grad() (or model.zero_grad()) once per step, before backward(); "
        "with several optimizers or modules, clear each of them",
    ),
    "zero-grad-before-step": Rule("error", "move zero_grad() before backward(), or after step()"),
    "step-without-backward": Rule("error", "call loss.backward() before optimizer.step(), and step once per backward pass"),
    "scheduler-before-step": Rule("warning", "call scheduler.step() after optimizer.step()"),
    "nonfinite": Rule("error", "lower the learning rate, clip gradients, or look for log(0), division by zero or fp16 overflow"),
    "nonfinite-loss": Rule(
        "info",
        "a mean over an empty batch (every label ignored, an empty mask, an empty Poisson-sampled batch) "
        "is NaN with zero gradients; otherwise look for a NaN in a term of the loss that no parameter affects",
    ),
    "exploding-grad": Rule("warning", "lower the learning rate or clip gradients (torch.nn.utils.clip_grad_norm_)"),
    "vanishing-grad": Rule("warning", "check the activations and initialization of the layers before it; consider normalization or residual connections"),
    "unused-param": Rule("warning", "the parameter is not part of the loss: look for a detached branch, .data, or an unused head; or set requires_grad=False"),
    "not-in-optimizer": Rule("warning", "build the optimizer after replacing layers or adding adapters, or add the parameter to it (optimizer.add_param_group)"),
    "zero-update": Rule(
        "warning",
        "check the learning rate and the parameter groups: the parameters are not moving"
        " (held at lr 0 on purpose? freeze them with requires_grad_(False), or pass --disable zero-update)",
    ),
    "input-bound": Rule(
        "info",
        "raise the DataLoader's num_workers (persistent_workers=True keeps them across epochs, prefetch_factor"
        " sets how many batches each loads ahead); on a GPU, pin_memory=True with .to(device, non_blocking=True);"
        " or make the dataset's __getitem__ and the collate function cheaper",
    ),
    "memory-growth": Rule(
        "warning",
        "something keeps every step's tensors alive: keep loss.item() (a float), not loss, in lists"
        " and logs, and .detach() what you store; a cache or replay buffer filling on purpose grows"
        " like this until it is full (--disable memory-growth)",
    ),
}
RUN_RULES = frozenset(("input-bound", "memory-growth"))
"""Rules about the run as a whole: reported once, whatever optimizer's step showed it."""


@dataclass
class Thresholds:
    """Defaults for the numeric rules (documented in docs/rules.md)."""

    explode_ratio: float = 100.0
    """exploding-grad: global norm above this many times its recent average."""
    explode_absolute: float = 1e8
    """exploding-grad: a global norm above this is absurd whatever the history."""
    explode_warmup: int = 10
    """exploding-grad: steps of history before the ratio test applies."""
    vanish_ratio: float = 1e-6
    """vanishing-grad: a parameter's norm below this fraction of the largest one."""
    vanish_detail_steps: int = 3
    """vanishing-grad: consecutive detail steps the condition must hold."""
    patience: int = 20
    """unused-param, zero-update: consecutive steps the condition must hold."""
    input_window: int = 50
    """input-bound: steps judged together (the run's first step and worker start-ups left out)."""
    input_share: float = 0.3
    """input-bound: information when DataLoader waits take more than this share of those steps' time."""
    input_share_warning: float = 0.6
    """input-bound: a warning past this share."""
    memory_warmup: int = 10
    """memory-growth: first steps left out (optimizer state, caches and lazy imports fill them)."""
    memory_stretches: int = 8
    """memory-growth: stretches of steps, each of whose lowest memory must be above the previous one's."""
    memory_stretch: int = 25
    """memory-growth: steps in a stretch at first; stretches double in length as the run grows, so that
    the window always spans at least the later half of the run."""
    memory_growth_bytes: int = 16 << 20
    """memory-growth: the least rise, from the first stretch's lowest to the last's, worth a warning."""


def _scope(rule: str, optimizer: int | None) -> tuple[str, int | None]:
    return (rule, None) if rule in RUN_RULES else (rule, optimizer)


@dataclass
class _OptimizerHistory:
    norm_average: float | None = None
    norm_steps: int = 0
    without_gradient: list[int] = field(default_factory=list)
    """Positions of the trainable parameters that had no gradient at any step so far, while
    no other parameter ever went without one (cleared for good once one does)."""
    unused_steps: int = 0
    names: list[str] | None = None
    """The parameter names these count for: another list means the groups changed."""
    zero_lr_streak: int = 0
    vanish_streak: int = 0


@dataclass
class _InputWindow:
    """DataLoader waits and step time over the steps of the window being filled."""

    steps: int = 0
    data: float = 0.0
    total: float = 0.0
    first_step: int = 0
    records: int = 0
    """Step records seen (the run's first is left out)."""


@dataclass
class _MemoryTrend:
    """The lowest step-end memory of each stretch of steps since the warm-up: stretches of
    doubling length, so that a run of any length keeps a few dozen numbers."""

    stretch: int
    kind: str = ""
    """What is measured (RSS, or CUDA's allocated bytes): another kind starts a new trend."""
    floors: list[tuple[int, int, int]] = field(default_factory=list)
    """(lowest bytes, first step, last step) of each finished stretch."""
    low: int | None = None
    first_step: int = 0
    seen: int = 0
    """Steps in the stretch being filled."""
    records: int = 0

    def add(self, value: int, step: int) -> bool:
        """Count a step's memory; whether a stretch just finished."""
        if self.seen == 0:
            self.low, self.first_step = value, step
        elif value < self.low:  # type: ignore[operator]
            self.low = value
        self.seen += 1
        if self.seen < self.stretch:
            return False
        self.floors.append((self.low, self.first_step, step))  # type: ignore[arg-type]
        self.seen = 0
        return True

    def merge(self) -> None:
        """Pairs of stretches become one, twice as long."""
        pairs = zip(self.floors[::2], self.floors[1::2])
        self.floors = [(min(a[0], b[0]), a[1], b[2]) for a, b in pairs]
        self.stretch *= 2



STRETCH_SECONDS = 1.0
"""A stretch of steps a rule keeps firing at is written at least this often (run time), so
that a killed run keeps where its rules fired."""


@dataclass
class _Stretch:
    first_step: int
    last_step: int
    count: int
    started: float


class Stretches:
    """Where each rule fired, repeats included, as stretches of consecutive steps: one record
    for a rule firing at every step, where a record per repeat would double the trace.

    A stretch ends at the first step of its optimizer the rule did not fire at (`passed`),
    and is cut at a new step once it has lasted `STRETCH_SECONDS`."""

    def __init__(self, write: Callable[[AnomalySteps], None]) -> None:
        self._write = write
        self._open: dict[tuple[str, int | None], _Stretch] = {}

    def add(self, rule: str, optimizer: int | None, step: int, t: float) -> None:
        key = (rule, optimizer)
        stretch = self._open.get(key)
        if stretch is not None:
            if stretch.first_step <= step <= stretch.last_step:
                stretch.count += 1
                return
            if step == stretch.last_step + 1 and t - stretch.started < STRETCH_SECONDS:
                stretch.last_step, stretch.count = step, stretch.count + 1
                return
            self._close(key)
        self._open[key] = _Stretch(step, step, 1, t)

    def passed(self, optimizer: int | None, step: int) -> None:
        """``optimizer``'s step ``step`` is judged: the stretches that did not reach it are over."""
        if self._open:  # nothing to do in a healthy run
            for key in [key for key, stretch in self._open.items() if key[1] == optimizer and stretch.last_step < step]:
                self._close(key)

    def close(self) -> None:
        """The run is over: write every stretch still going."""
        for key in list(self._open):
            self._close(key)

    def _close(self, key: tuple[str, int | None]) -> None:
        stretch = self._open.pop(key)
        self._write(AnomalySteps(key[0], key[1], stretch.first_step, stretch.last_step, stretch.count))


class Diagnostics:
    """Reports anomalies once per (rule, optimizer), counts their repeats, and writes where they were."""

    def __init__(
        self,
        thresholds: Thresholds,
        disabled: frozenset[str],
        emit: Callable[[Anomaly], None],
        write_steps: Callable[[AnomalySteps], None] = lambda steps: None,
    ) -> None:
        self.thresholds = thresholds
        self.disabled = disabled
        self._emit = emit
        self.counts: dict[str, int] = {}
        self.severities: dict[str, str] = {}
        """The gravest severity each rule was reported at (for the end record)."""
        self._stretches = Stretches(write_steps)
        self._reported: dict[tuple[str, int | None], int] = {}
        """The gravest severity (its place in `SEVERITIES`) reported per rule and optimizer
        (per rule alone for `RUN_RULES`)."""
        self._history: dict[int | None, _OptimizerHistory] = {}
        self._input = _InputWindow()
        self._memory = _MemoryTrend(thresholds.memory_stretch)

    def report(
        self, rule: str, step: int, optimizer: int | None, message: str, param: str | None = None, t: float = 0.0,
        severity: str | None = None,
    ) -> None:
        """Count the problem, and report it the first time (``severity``, where a rule has two:
        reported again, once, when it grows graver)."""
        if rule in self.disabled:
            return
        self.counts[rule] = self.counts.get(rule, 0) + 1
        self._stretches.add(rule, optimizer, step, t)
        spec = RULES[rule]
        severity = severity or spec.severity
        if not self._first_report(rule, optimizer, severity):
            return
        self._reported[_scope(rule, optimizer)] = SEVERITIES.index(severity)
        previous = self.severities.get(rule)
        if previous is None or SEVERITIES.index(severity) > SEVERITIES.index(previous):
            self.severities[rule] = severity
        self._emit(Anomaly(rule, severity, step, optimizer, param, message, spec.hint, t))

    def close(self) -> None:
        """The run is over: write where the rules still firing fired."""
        self._stretches.close()

    def _first_report(self, rule: str, optimizer: int | None, severity: str | None = None) -> bool:
        """Whether reporting ``rule`` for ``optimizer`` now would print it (not disabled, and not
        yet reported at this severity or a graver one)."""
        if rule in self.disabled:
            return False
        reported = self._reported.get(_scope(rule, optimizer))
        return reported is None or SEVERITIES.index(severity or RULES[rule].severity) > reported

    def check_step(
        self,
        record: StepRecord,
        names: list[str],
        param_norms: list[float | None] | None,
        missing: list[int],
        culprit: Callable[[], str | None] = lambda: None,
        backward_ran: bool = True,
    ) -> None:
        """Judge a finished step with the numbers already computed for it; then the stretches
        of the rules that did not fire at it are over.

        ``param_norms`` (aligned with ``names``) is given on detail steps;
        ``missing`` lists the positions of trainable parameters that had no
        gradient; ``culprit`` finds the first parameter with a non-finite
        gradient, called only when a `nonfinite` report is the optimizer's first;
        ``backward_ran``: backward passes ran since the optimizer's previous step (whether or
        not they reached it: an optimizer on a model the loop no longer uses gets none of them).
        """
        if not record.skipped:
            history = self._history.get(record.optimizer)
            if history is None:
                history = self._history[record.optimizer] = _OptimizerHistory()
            self._check_nonfinite(record, culprit)
            self._check_exploding(record, history)
            self._check_unused(record, names, missing, history, backward_ran)
            self._check_zero_update(record, history)
            if param_norms is not None:
                self._check_vanishing(record, names, param_norms, history)
        self._stretches.passed(record.optimizer, record.step)

    def check_run(self, record: StepRecord, data_startup: bool = False, loader: LoaderSettings | None = None) -> None:
        """Judge a finished step with the run's other steps, whichever optimizer made them: the
        share of their time spent waiting for batches, and whether memory keeps rising.
        ``data_startup``: its wait includes a loader's first workers starting; ``loader``: the
        settings of the last DataLoader fetched from."""
        if "input-bound" not in self.disabled:
            self._check_input_bound(record, data_startup, loader)
        if record.memory is not None and "memory-growth" not in self.disabled:
            self._check_memory_growth(record)

    def _check_input_bound(self, record: StepRecord, data_startup: bool, loader: LoaderSettings | None) -> None:
        """DataLoader waits over a share of the time of `Thresholds.input_window` steps. Left
        out: the run's first step (set-up, and whatever the script fetched before its first
        backward) and a step whose wait includes a loader's first worker processes starting;
        later epochs' new workers count, since they cost every epoch (persistent_workers)."""
        window = self._input
        window.records += 1
        if window.records == 1 or data_startup:
            return
        if not window.steps:
            window.first_step = record.step
        window.steps += 1
        window.data += record.time.get("data", 0.0)
        window.total += record.time.get("total", 0.0)
        limits = self.thresholds
        if window.steps < limits.input_window:
            return
        self._input = _InputWindow(records=window.records)
        share = window.data / window.total if window.total > 0 else 0.0
        if share <= limits.input_share:
            return
        steps = window.steps
        message = (
            f"waiting for DataLoader batches took {share:.0%} of the time of steps {window.first_step}–{record.step}"
            f" ({window.data / steps * 1e3:.3g} ms of {window.total / steps * 1e3:.3g} ms a step)"
            + (f"; the loader has {loader.describe()}" if loader is not None else "")
        )
        severity = "warning" if share > limits.input_share_warning else "info"
        self.report("input-bound", record.step, record.optimizer, message, None, record.t, severity)

    def _check_memory_growth(self, record: StepRecord) -> None:
        """Step-end memory whose lowest value rose from each stretch of steps to the next, over
        `Thresholds.memory_stretches` stretches, by `Thresholds.memory_growth_bytes` at least.

        The lowest value of a stretch, not its last: memory freed late (a cache emptied, an
        evaluation's tensors) swings it up and down, a leak raises its floor. Stretches
        double in length as the run grows (the window spans the later half of the run at
        least), so that a slow leak shows over a long run, and one that begins after N steps
        shows by about 2.5 N.
        """
        reading = step_memory(record.memory)
        if reading is None:
            return
        kind, value = reading
        limits = self.thresholds
        trend = self._memory
        if kind != trend.kind:
            trend = self._memory = _MemoryTrend(limits.memory_stretch, kind)
        trend.records += 1
        if trend.records <= limits.memory_warmup or not trend.add(value, record.step):
            return
        floors = trend.floors[-limits.memory_stretches :]
        rise = floors[-1][0] - floors[0][0]
        if (
            len(floors) == limits.memory_stretches
            and rise >= limits.memory_growth_bytes
            and all(a[0] < b[0] for a, b in itertools.pairwise(floors))
        ):
            (low, first, _), (high, _, last) = floors[0], floors[-1]
            per_step = rise / (trend.stretch * (len(floors) - 1))
            self.report(
                "memory-growth", record.step, record.optimizer,
                f"{MEASURES[kind]} at the steps' ends rose through each of {len(floors)} stretches"
                f" of {trend.stretch} steps,"
                f" from {fmt_bytes(low)} at least in the first to {fmt_bytes(high)} in the last"
                f" (steps {first}–{last}: about {fmt_bytes(per_step)} a step)",
                None, record.t,
            )
        if len(trend.floors) == 2 * limits.memory_stretches:
            trend.merge()

    def _check_nonfinite(self, record: StepRecord, culprit: Callable[[], str | None]) -> None:
        """A NaN/Inf gradient is an error. A NaN/Inf loss whose gradients are all finite, or
        that reached none of the step's parameters, harms no step (a mean over an empty batch;
        another task's loss in a loop that alternates): `nonfinite-loss`, for information."""
        loss_bad = record.loss is not None and not math.isfinite(record.loss)
        norm_bad = record.grad_norm is not None and not math.isfinite(record.grad_norm)
        if not (loss_bad or norm_bad):
            return
        if not norm_bad:
            harmless = "the gradients the step used are finite" if record.grad_norm is not None else "no gradient reached the step"
            self.report(
                "nonfinite-loss", record.step, record.optimizer, f"loss is {record.loss} at step {record.step}, but {harmless}",
                None, record.t,
            )
            return
        param = culprit() if self._first_report("nonfinite", record.optimizer) else None
        what = f"loss is {record.loss}" if loss_bad else f"gradient norm is {record.grad_norm}"
        where = f", first in {param}'s gradient" if param else ""
        self.report("nonfinite", record.step, record.optimizer, f"{what} at step {record.step}{where}", param, record.t)

    def _check_exploding(self, record: StepRecord, history: _OptimizerHistory) -> None:
        """A norm far above the recent average of this optimizer's norms. Zero norms are no
        part of that history: a step whose loss is exactly zero (no reward, no margin
        violated, an empty mask) has no gradient scale, and the next real one is no jump."""
        norm = record.grad_norm
        if norm is None or not math.isfinite(norm) or norm == 0.0:
            return
        limits = self.thresholds
        average = history.norm_average
        if norm > limits.explode_absolute or (
            average is not None and history.norm_steps >= limits.explode_warmup and norm > limits.explode_ratio * average
        ):
            recent = f" ({norm / average:.0f}× its recent average {average:.3g})" if average else ""
            self.report(
                "exploding-grad", record.step, record.optimizer,
                f"gradient norm {norm:.3g} at step {record.step}{recent}", None, record.t,
            )
        history.norm_average = norm if average is None else 0.9 * average + 0.1 * norm
        history.norm_steps += 1

    def _check_unused(
        self, record: StepRecord, names: list[str], missing: list[int], history: _OptimizerHistory, backward_ran: bool
    ) -> None:
        """Parameters that had no gradient at any step, where the same ones went without at
        every step. Where which parameters get gradients changes from step to step (a head
        per task, experts tokens are routed to, alternating losses), the loop computes
        conditionally: a parameter not used yet is not unused, and the rule stays quiet.
        """
        if names is not history.names:  # the first step, or the groups changed: count afresh
            history.names = names
            history.without_gradient = list(missing)
            history.unused_steps = 0
        if not history.without_gradient:
            return
        if missing != history.without_gradient:
            history.without_gradient = []
            return
        history.unused_steps += 1
        if backward_ran and history.unused_steps >= self.thresholds.patience:
            index = missing[0]
            name = names[index] if index < len(names) else f"param{index}"
            message = f"{name} requires grad but has received no gradient for {history.unused_steps} steps"
            if len(missing) == len(names):  # backward passes ran, and reached none of them
                message = (
                    f"no parameter of optimizer {record.optimizer} has received a gradient for {history.unused_steps} steps"
                    f" (first: {name}), though backward passes ran: it may hold the parameters of a model"
                    " the loop no longer uses (built before the model was built again)"
                )
            self.report("unused-param", record.step, record.optimizer, message, name, record.t)

    def _check_zero_update(self, record: StepRecord, history: _OptimizerHistory) -> None:
        frozen = 0.0 in record.lr and any(
            lr == 0.0 and norm is not None and norm > 0.0
            for lr, norm in zip(record.lr, record.group_grad_norms)
        )
        history.zero_lr_streak = history.zero_lr_streak + 1 if frozen else 0
        if history.zero_lr_streak >= self.thresholds.patience:
            group = next(i for i, (lr, n) in enumerate(zip(record.lr, record.group_grad_norms)) if lr == 0.0 and n)
            self.report(
                "zero-update", record.step, record.optimizer,
                f"param group {group} has lr 0 with non-zero gradients for {history.zero_lr_streak} steps",
                None, record.t,
            )

    def _check_vanishing(
        self, record: StepRecord, names: list[str], param_norms: list[float | None], history: _OptimizerHistory
    ) -> None:
        """A layer whose gradient is many orders of magnitude below the largest layer's and
        that does not move either.

        Layers (a module's parameters together), not single parameters: a bias just before
        a BatchNorm gets a gradient that is zero but for rounding. And the update, where the
        step measured it: a branch scaled down at init (ReZero, LayerScale, zero-init
        residuals) gets tiny gradients by design, and Adam still moves it normally.
        """
        ratios = record.param_update_ratios or {}
        squares: dict[str, float] = {}
        moved: dict[str, float] = {}  # a layer's largest per-parameter update ratio
        first_param: dict[str, str] = {}
        for name, norm in zip(names, param_norms):
            if norm is not None and math.isfinite(norm):
                layer = name.rpartition(".")[0] or name
                squares[layer] = squares.get(layer, 0.0) + norm * norm
                first_param.setdefault(layer, name)
                update = ratios.get(name)
                if update is not None and math.isfinite(update):
                    moved[layer] = max(moved.get(layer, 0.0), update)
        present = [(math.sqrt(square), layer) for layer, square in squares.items() if square > 0.0]
        if len(present) < 2:
            return
        limit = self.thresholds.vanish_ratio
        largest = max(norm for norm, _ in present)
        largest_move = max(moved.values(), default=0.0)
        starved = [
            (norm, layer)
            for norm, layer in present
            if norm < limit * largest and not (largest_move and moved.get(layer, 0.0) >= limit * largest_move)
        ]
        if starved:
            history.vanish_streak += 1
        else:
            history.vanish_streak = 0
        if history.vanish_streak >= self.thresholds.vanish_detail_steps:
            smallest, layer = min(starved)
            self.report(
                "vanishing-grad", record.step, record.optimizer,
                f"layer {layer} gets gradients {largest / smallest:.1e}× smaller than the largest layer's",
                first_param[layer], record.t,
            )
