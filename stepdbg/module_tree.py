"""`ModuleTree`: the script's modules as they are built, for the qualified names
(``encoder.layers.3.weight``) of optimizers' parameters.

An optimizer only holds tensors. nn.Module's global registration hooks tell,
as the script builds its models, which module owns each parameter under which
name, and which module is whose child; walking up that chain gives the name
relative to the root module. Models that come about without registrations are
found too: copies (``copy.deepcopy``, unpickling: ``Module.__setstate__`` is
watched) and modules put in place by hand (``parent._modules[name] = m``, as
quantization's module swaps and ``Sequential.insert`` do), looked for among the
known modules when names are asked for. Everything is held weakly, and the hooks
cost nothing once the models are built.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.nn.modules.module import (
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)
from torch.utils.hooks import RemovableHandle
from torch.utils.weak import WeakIdKeyDictionary


class ModuleTree:
    """Remembers who owns what, as modules and parameters are registered."""

    def __init__(self) -> None:
        self._param_owners: WeakIdKeyDictionary = WeakIdKeyDictionary()  # param -> [(module ref, name), ...]
        self._module_parents: WeakIdKeyDictionary = WeakIdKeyDictionary()  # module -> [(parent ref, name), ...]
        self._handles: list[RemovableHandle] = []
        self._setstate: Any = None
        self._registered_since_search = True
        """Whether modules or parameters came since `_adopt_unregistered` last searched."""

    def install(self) -> None:
        self._handles = [
            register_module_parameter_registration_hook(self._on_parameter),
            register_module_module_registration_hook(self._on_module),
        ]
        self._setstate = torch.nn.Module.__dict__["__setstate__"]
        torch.nn.Module.__setstate__ = self._watch_setstate(self._setstate)  # type: ignore[method-assign]

    def uninstall(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._setstate is not None:
            torch.nn.Module.__setstate__ = self._setstate  # type: ignore[method-assign]
            self._setstate = None

    def _watch_setstate(
        self, original: Callable[[torch.nn.Module, dict], None]
    ) -> Callable[[torch.nn.Module, dict], None]:
        """A module restored from its state (a deep copy, a pickled model loaded) registers
        nothing: take its parameters and children as registrations."""
        tree = self

        @functools.wraps(original)
        def __setstate__(module: torch.nn.Module, state: dict) -> None:
            original(module, state)
            tree.learn(module)

        return __setstate__

    def learn(self, module: torch.nn.Module) -> None:
        """What ``module`` holds now, as if it had been registered."""
        for name, param in module.__dict__.get("_parameters", {}).items():
            self._on_parameter(module, name, param)
        for name, child in module.__dict__.get("_modules", {}).items():
            self._on_module(module, name, child)

    def _on_parameter(self, module: torch.nn.Module, name: str, param: torch.nn.Parameter | None) -> None:
        if param is not None:
            self._remember(self._param_owners, param, module, name)

    def _remember(self, table: WeakIdKeyDictionary, item: object, holder: torch.nn.Module, name: str) -> None:
        """``holder`` holds ``item`` under ``name``; holders gone (modules built per iteration)
        are dropped as new ones come."""
        self._registered_since_search = True
        entries = table.get(item)
        if entries is None:
            table[item] = [(weakref.ref(holder), name)]
        elif not any(ref() is holder and known == name for ref, known in entries):
            entries[:] = [entry for entry in entries if entry[0]() is not None]
            entries.append((weakref.ref(holder), name))

    def _holder(self, param: torch.Tensor) -> tuple[torch.nn.Module, str] | None:
        """The module that holds ``param`` now, and its name there.

        Of several that hold it in one model (tied weights), the first that
        ``named_parameters()`` meets, whose name it gives; a parameter moved to another
        module (a parametrization's ``original``: spectral_norm registers it there, then
        removes it from its layer) takes its new one.
        """
        holders: list[tuple[torch.nn.Module, str]] = []
        moved: tuple[torch.nn.Module, str] | None = None
        for ref, name in self._param_owners.get(param, ()):
            module = ref()
            if module is None:
                continue
            if module._parameters.get(name) is param:
                holders.append((module, name))
            moved = moved or (module, name)
        if len(holders) > 1:
            return self._first_met(holders)
        return holders[0] if holders else moved

    def _first_met(self, holders: list[tuple[torch.nn.Module, str]]) -> tuple[torch.nn.Module, str]:
        """Of ``holders`` of one parameter, the one a walk of their model (``named_modules()``
        order, each module's own parameters before its children's) meets first; the first
        registered where they are in different models."""
        walks = []
        for module, name in holders:
            position = [(0, list(module._parameters).index(name))]
            root = module
            for parent, child in self._ancestry(module):
                position.append((1, list(parent._modules).index(child)))
                root = parent
            walks.append((root, position[::-1]))
        if any(root is not walks[0][0] for root, _ in walks):
            return holders[0]
        return holders[min(range(len(walks)), key=lambda i: walks[i][1])]

    def _on_module(self, parent: torch.nn.Module, name: str, child: torch.nn.Module | None) -> None:
        if child is not None and child is not parent:
            self._remember(self._module_parents, child, parent, name)

    def _parent(self, module: torch.nn.Module) -> tuple[torch.nn.Module, str] | None:
        """The module that holds ``module`` now, and its name there: the first to register it
        that still holds it (a module shared by two parents keeps the name ``named_modules()``
        gives it first), found under a new name where it was moved (``Sequential.insert``, ``del``)."""
        moved: tuple[torch.nn.Module, str] | None = None
        for ref, name in self._module_parents.get(module, ()):
            parent = ref()
            if parent is None:
                continue
            children = parent._modules
            if children.get(name) is module:
                return parent, name
            if moved is None:
                moved = next(((parent, key) for key, child in children.items() if child is module), None)
        return moved

    def _ancestry(self, module: torch.nn.Module) -> Iterator[tuple[torch.nn.Module, str]]:
        """Yield (parent, name of the child in it) up to the root; stops on cycles, and
        below torch.compile's wrapper, which holds the model as ``_orig_mod``: the
        compiled model's names are the model's own (``0.weight``, not ``_orig_mod.0.weight``)."""
        seen = {id(module)}
        entry = self._parent(module)
        while entry is not None:
            parent, name = entry
            if id(parent) in seen or (name == "_orig_mod" and type(parent).__name__ == "OptimizedModule"):
                return
            seen.add(id(parent))
            yield parent, name
            entry = self._parent(parent)

    def owner(self, param: torch.Tensor) -> torch.nn.Module | None:
        holder = self._holder(param)
        return holder[0] if holder is not None else None

    def root(self, param: torch.Tensor) -> torch.nn.Module | None:
        module = self.owner(param)
        if module is None:
            return None
        for parent, _ in self._ancestry(module):
            module = parent
        return module

    def wrapped_in(self, param: torch.Tensor, wrapper: type) -> bool:
        """Whether a module of class ``wrapper`` holds ``param``'s module (DistributedDataParallel)."""
        module = self.owner(param)
        return module is not None and any(isinstance(parent, wrapper) for parent, _ in self._ancestry(module))

    def name(self, param: torch.Tensor) -> str | None:
        holder = self._holder(param)
        if holder is None:
            return None
        module, name = holder
        parts = [name]
        for _, child_name in self._ancestry(module):
            parts.append(child_name)
        return ".".join(reversed(parts))

    def _known_modules(self) -> list[torch.nn.Module]:
        modules: dict[int, torch.nn.Module] = {}
        for child, parents in list(self._module_parents.items()):
            modules[id(child)] = child
            for ref, _ in parents:
                if (parent := ref()) is not None:
                    modules[id(parent)] = parent
        for owners in list(self._param_owners.values()):
            for ref, _ in owners:
                if (module := ref()) is not None:
                    modules[id(module)] = module
        return list(modules.values())

    def _adopt_unregistered(self) -> None:
        """Find what was put in place without registration among the known modules: parameters
        (``module._parameters[name] = p``, as FSDP2 installs its sharded ones) and modules
        (``parent._modules[name] = m``: quantization's swaps), and what those new modules hold."""
        modules = self._known_modules()
        known = {id(module) for module in modules}
        # the search registers what it finds; only registrations made after it call for another
        while modules:
            found = []
            for module in modules:
                for child in module._modules.values():
                    if child is not None and id(child) not in known:
                        known.add(id(child))
                        found.append(child)
                self.learn(module)
            modules = found
        self._registered_since_search = False

    def names(self, params: list[torch.Tensor]) -> list[str]:
        """Unique names for ``params``; unknown or repeated ones become ``param<N>``."""
        if self._registered_since_search and (
            any(self._holder(p) is None for p in params) or len({id(self.root(p)) for p in params}) > 1
        ):
            self._adopt_unregistered()  # parameters of no module we know, or modules of no model
        result: list[str] = []
        seen: set[str] = set()
        for index, param in enumerate(params):
            name = self.name(param)
            if name is None or name in seen:
                name = f"param{index}"
            seen.add(name)
            result.append(name)
        return result
