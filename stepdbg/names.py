"""Qualified parameter names (``encoder.layers.3.weight``) for optimizers' parameters.

An optimizer only holds tensors. nn.Module's global registration hooks tell,
as the script builds its models, which module owns each parameter under which
name, and which module is whose child; walking up that chain gives the name
relative to the root module. Everything is held weakly, and the hooks cost
nothing once the models are built.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator

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
        self._module_parent: WeakIdKeyDictionary = WeakIdKeyDictionary()  # module -> (parent ref, name)
        self._handles: list[RemovableHandle] = []

    def install(self) -> None:
        self._handles = [
            register_module_parameter_registration_hook(self._on_parameter),
            register_module_module_registration_hook(self._on_module),
        ]

    def uninstall(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _on_parameter(self, module: torch.nn.Module, name: str, param: torch.nn.Parameter | None) -> None:
        if param is None:
            return
        owners = self._param_owners.get(param)
        if owners is None:
            self._param_owners[param] = [(weakref.ref(module), name)]
        elif not any(ref() is module and known == name for ref, known in owners):
            owners[:] = [owner for owner in owners if owner[0]() is not None]  # modules built per iteration
            owners.append((weakref.ref(module), name))

    def _holder(self, param: torch.Tensor) -> tuple[torch.nn.Module, str] | None:
        """The module that holds ``param`` now, and its name there.

        The first to register it that still holds it: tied weights keep the name
        ``named_parameters()`` gives them, and a parameter moved to another module
        (a parametrization's ``original``: spectral_norm registers it there, then
        removes it from its layer) takes its new one.
        """
        moved: tuple[torch.nn.Module, str] | None = None
        for ref, name in self._param_owners.get(param, ()):
            module = ref()
            if module is None:
                continue
            if module._parameters.get(name) is param:
                return module, name
            moved = moved or (module, name)
        return moved

    def _on_module(self, parent: torch.nn.Module, name: str, child: torch.nn.Module | None) -> None:
        if child is not None and child is not parent and child not in self._module_parent:
            self._module_parent[child] = (weakref.ref(parent), name)

    def _ancestry(self, module: torch.nn.Module) -> Iterator[tuple[torch.nn.Module, str]]:
        """Yield (parent, name of the child in it) up to the root; stops on cycles, and
        below torch.compile's wrapper, which holds the model as ``_orig_mod``: the
        compiled model's names are the model's own (``0.weight``, not ``_orig_mod.0.weight``)."""
        seen = {id(module)}
        entry = self._module_parent.get(module)
        while entry is not None:
            parent, name = entry[0](), entry[1]
            if parent is None or id(parent) in seen or (name == "_orig_mod" and type(parent).__name__ == "OptimizedModule"):
                return
            seen.add(id(parent))
            yield parent, name
            entry = self._module_parent.get(parent)

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

    def name(self, param: torch.Tensor) -> str | None:
        holder = self._holder(param)
        if holder is None:
            return None
        module, name = holder
        parts = [name]
        for _, child_name in self._ancestry(module):
            parts.append(child_name)
        return ".".join(reversed(parts))

    def _adopt_unregistered(self, params: list[torch.Tensor]) -> None:
        """Find the modules holding parameters put in place without registration:
        ``module._parameters[name] = p``, as FSDP2 installs its sharded parameters."""
        unknown = {id(p) for p in params if self._holder(p) is None}
        if not unknown:
            return
        modules: dict[int, torch.nn.Module] = {}
        for child, (parent_ref, _) in list(self._module_parent.items()):
            modules[id(child)] = child
            if (parent := parent_ref()) is not None:
                modules[id(parent)] = parent
        for owners in list(self._param_owners.values()):
            for ref, _ in owners:
                if (module := ref()) is not None:
                    modules[id(module)] = module
        for module in modules.values():
            for name, param in module._parameters.items():
                if param is not None and id(param) in unknown:
                    self._on_parameter(module, name, param)

    def names(self, params: list[torch.Tensor]) -> list[str]:
        """Unique names for ``params``; unknown or repeated ones become ``param<N>``."""
        self._adopt_unregistered(params)
        result: list[str] = []
        seen: set[str] = set()
        for index, param in enumerate(params):
            name = self.name(param)
            if name is None or name in seen:
                name = f"param{index}"
            seen.add(name)
            result.append(name)
        return result
