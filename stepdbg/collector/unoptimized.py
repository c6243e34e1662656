"""Parameters that get gradients and that no optimizer holds, looked for at detail steps
(`UnoptimizedGradient`): a walk over the optimizer's models, made only while a rule
judges such facts. What the rules find is reported once the iteration is over, where
no optimizer built in the meantime holds the parameter."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.weak import WeakIdKeyDictionary

from ..diagnostics import Diagnostics
from ..facts import UnoptimizedGradient
from ..module_tree import ModuleTree
from ..rules import FactRule, Finding
from .layout import ParamLayout
from .optimizers import OptimizerRegistry, OptimizerTrack


@dataclass(slots=True)
class _Unheld:
    """A parameter that had gradients, and no optimizer, at an optimizer's detail step, and
    what the rules found in it."""

    fact: UnoptimizedGradient
    param: weakref.ref
    found: list[tuple[FactRule, Finding]]


class UnoptimizedParams:
    """Walks the models of an optimizer at its detail steps, remembers which parameters were
    frozen there, and holds what the rules found until the iteration is over."""

    def __init__(
        self,
        tree: ModuleTree,
        optimizers: OptimizerRegistry,
        diagnostics: Diagnostics,
        since_start: Callable[[], float],
    ) -> None:
        self._tree = tree
        self._optimizers = optimizers
        self._diagnostics = diagnostics
        self._since_start = since_start
        self._frozen_seen = WeakIdKeyDictionary()
        """Parameters seen not requiring grad at a detail step."""
        self.unheld: list[_Unheld] = []
        """Parameters with gradients and no optimizer at a detail step, until `report`."""

    def check(self, track: OptimizerTrack, step: int, layout: ParamLayout) -> None:
        """Parameters of the optimizer's models that get gradients and that no optimizer holds,
        each handed to the rules; on the way, the parameters that do not require grad,
        remembered (weakly) as frozen."""
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
                found = self._diagnostics.find(fact)
                if found:
                    self.unheld.append(_Unheld(fact, weakref.ref(param), found))

    def report(self) -> None:
        """The first parameter each detail step found with gradients and no optimizer, that
        none holds yet: an optimizer built in the same iteration, after that step, owns the
        iteration's backward and its parameters (Pyro builds one per parameter, the first
        time it steps, in a set's order). Called at the next backward and at the run's end."""
        unheld, self.unheld = self.unheld, []
        reported: set[tuple[int, int]] = set()
        for entry in unheld:
            param, fact = entry.param(), entry.fact
            key = (fact.optimizer, fact.step)
            if param is None or key in reported or id(param) in self._optimizers.by_param:
                continue
            reported.add(key)
            for rule, finding in entry.found:
                self._diagnostics.report(rule, finding, fact.step, fact.optimizer, self._since_start())

    def forget(self, optimizer: int, step: int) -> None:
        """What a step found before it ran backward passes of its own, and reads again at its end."""
        if self.unheld:
            self.unheld = [e for e in self.unheld if (e.fact.optimizer, e.fact.step) != (optimizer, step)]

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
