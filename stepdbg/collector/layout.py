"""An optimizer's parameters as its steps read them (`ParamLayout`), and which of them those are."""

from __future__ import annotations

import operator
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from .. import norms


def params_of(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The optimizer's parameters whose ``.grad`` can be read (see `gradient_holders`)."""
    return [p for group in optimizer.param_groups for p in gradient_holders(group["params"])]


def gradient_holders(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """``params`` without the non-leaf tensors (a differentiable optimizer's fast weights, cloned
    from the real ones), whose ``.grad`` torch warns about reading when it is unset: stepdbg
    leaves them alone. The list itself where all are leaves, as they nearly always are."""
    if all(p.is_leaf or p.retains_grad for p in params):
        return params
    return [p for p in params if p.is_leaf or p.retains_grad]


def first_param(optimizer: Any) -> torch.Tensor | None:
    try:
        return optimizer.param_groups[0]["params"][0]
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


@dataclass(eq=False, slots=True)
class ParamLayout:
    """An optimizer's parameters as its steps read them, kept while its groups hold the same ones.

    A step reads every parameter's gradient; rebuilding the flat list, the
    positions and the norm strategy each time is most of the cost on small
    models, so they are cached, and checked at each step, parameter by
    parameter, against the groups' lists (an element swapped in place counts).
    The registry drops a layout when its optimizer is collected, so it never
    keeps a model alive.
    """

    sources: list[list[torch.Tensor]]
    """Copies of the groups' ``params`` lists as they were when the layout was made."""
    lists: list[list[torch.Tensor]]
    """The parameters of each group that stepdbg reads (``sources``' lists, where all are leaves)."""
    params: list[torch.Tensor]
    positions: list[int]
    group_of: list[int]
    norm_plan: tuple[list[int], norms.GroupNormPlan] | None = None
    """How a step takes its gradients' norms, for the positions of the parameters that had one
    (every one, or the same ones step after step where some are frozen); made when those change."""
    sharded: bool = False
    """Some parameter is a DTensor (FSDP2, tensor parallelism): norms are of this rank's shards."""
    numel: int = 0
    """Elements of all the parameters (of their shards, where sharded, as their norms read them)."""
    roots: list[weakref.ref] | None = None
    """The root modules of the parameters, held weakly; found at the first detail step."""

    @property
    def partial(self) -> bool:
        """Some of the optimizer's tensors are not read (non-leaf ones: see `gradient_holders`):
        what its gradients look like says nothing sure about the ordering rules."""
        return any(read is not source for read, source in zip(self.lists, self.sources))

    @classmethod
    def of(cls, optimizer: Any) -> ParamLayout:
        sources = [list(group["params"]) for group in optimizer.param_groups]
        lists = [gradient_holders(params) for params in sources]
        params = [p for params in lists for p in params]
        group_of = [index for index, params in enumerate(lists) for _ in params]
        sharded = any(norms.is_sharded(p) for p in params)
        numel = sum(p.numel() for p in (norms.local_shards(params) if sharded else params))
        return cls(sources, lists, params, list(range(len(params))), group_of, sharded=sharded, numel=numel)

    def local_params(self) -> list[torch.Tensor]:
        """The parameters as this rank holds them (see `sharded`)."""
        return norms.local_shards(self.params) if self.sharded else self.params

    def matches(self, optimizer: Any) -> bool:
        groups = optimizer.param_groups
        if len(groups) != len(self.sources):
            return False
        for group, cached in zip(groups, self.sources):
            live = group["params"]
            if len(live) != len(cached) or not all(map(operator.is_, live, cached)):
                return False
        return True

    def group_lengths(self, present: list[int]) -> list[int]:
        """How many of the parameters at ``present`` (in order) each group holds."""
        if present is self.positions:
            return [len(params) for params in self.lists]
        lengths = [0] * len(self.lists)
        for position in present:
            lengths[self.group_of[position]] += 1
        return lengths

    def grad_norm_pieces(self, grads: list[torch.Tensor], present: list[int]) -> tuple[list[torch.Tensor], list[int]]:
        """Norm pieces of ``grads`` (those of the parameters at ``present``) and how many each group has."""
        cached = self.norm_plan
        if cached is not None and (cached[0] is present or cached[0] == present):
            plan = cached[1]
        else:
            plan = norms.GroupNormPlan.of(grads, self.group_lengths(present))
            self.norm_plan = (present, plan)
        try:
            return plan.pieces(grads)
        except RuntimeError:  # no longer one buffer: a gradient made sparse, parameters moved across devices
            if plan.runs is None:
                raise
            self.norm_plan = (present, plan.without_buffer())
            return self.norm_plan[1].pieces(grads)
