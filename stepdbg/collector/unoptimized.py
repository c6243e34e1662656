"""Parameters that get gradients and that no optimizer holds, looked for at detail steps
(`UnoptimizedGradient`): a walk over the optimizer's models, made only while a rule
judges such facts."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable

import torch
from torch.utils.weak import WeakIdKeyDictionary

from ..facts import UnoptimizedGradient
from ..names import ModuleTree
from .layout import ParamLayout
from .optimizers import OptimizerRegistry, OptimizerTrack


class UnoptimizedParams:
    """Walks the models of an optimizer at its detail steps, and remembers which parameters
    were frozen there."""

    def __init__(self, tree: ModuleTree, optimizers: OptimizerRegistry, judge_now: Callable[[object], bool]) -> None:
        self._tree = tree
        self._optimizers = optimizers
        self._judge_now = judge_now
        self._frozen_seen = WeakIdKeyDictionary()
        """Parameters seen not requiring grad at a detail step."""

    def check(self, track: OptimizerTrack, step: int, layout: ParamLayout) -> None:
        """Parameters of the optimizer's models that get gradients and that no optimizer holds,
        each handed to the rules until one is found wrong; on the way, the parameters that do
        not require grad, remembered (weakly) as frozen."""
        roots = self._roots(layout)
        optimized = self._optimizers.by_param
        frozen = self._frozen_seen
        params = layout.params
        holds_old_params = functools.cache(lambda: _has_orphans(params, roots))
        holds_only_frozen = functools.cache(lambda: not any(p.requires_grad for p in params))
        for root in roots:
            for name, param in root.named_parameters():
                if not param.requires_grad:
                    frozen[param] = True
                    continue
                if id(param) in optimized or param.grad is None:
                    continue
                siblings_optimized = functools.partial(self._siblings_optimized, param)
                fact = UnoptimizedGradient(
                    track.index, step, name, param in frozen, siblings_optimized, holds_only_frozen, holds_old_params
                )
                if self._judge_now(fact):
                    return

    def _siblings_optimized(self, param: torch.Tensor) -> bool:
        """Whether an optimizer holds another parameter of ``param``'s module."""
        owner = self._tree.owner(param)
        return owner is not None and any(id(p) in self._optimizers.by_param for p in owner.parameters())

    def _roots(self, layout: ParamLayout) -> list[torch.nn.Module]:
        """The models the optimizer's parameters belong to (a model wrapped later is still
        one of them, and everything the rule looks for lies inside it)."""
        if layout.roots is None:
            found = {id(root): root for p in layout.params if (root := self._tree.root(p)) is not None}
            layout.roots = [weakref.ref(root) for root in found.values()]
        return [root for ref in layout.roots if (root := ref()) is not None]


def _has_orphans(params: list[torch.Tensor], roots: list[torch.nn.Module]) -> bool:
    """Whether the optimizer holds parameters (``params``) that are no longer part of its models."""
    current = {id(p) for root in roots for p in root.parameters()}
    return any(id(p) not in current for p in params)
