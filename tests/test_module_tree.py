"""Parameter names: the ones ``model.named_parameters()`` gives, however the model was built."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from stepdbg.module_tree import ModuleTree


class Tied(nn.Module):
    """An embedding and an output layer sharing one weight, as language models do."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 10, bias=False)
        self.out.weight = self.embed.weight


class TiedBackwards(nn.Module):
    """nanoGPT's tying: the embedding takes the output layer's weight, which that layer
    registered first, while ``named_parameters()`` meets the embedding first."""

    def __init__(self) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict({"wte": nn.Embedding(10, 4), "h": nn.Linear(4, 4)})
        self.lm_head = nn.Linear(4, 10, bias=False)
        self.transformer.wte.weight = self.lm_head.weight


def replaced_head() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    model[2] = nn.Linear(4, 3)
    return model


def swapped_by_hand() -> nn.Module:
    """A module put in place without registration, as quantization's module swaps do."""
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 2)))
    model._modules["0"] = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    return model


def inserted() -> nn.Module:
    """``Sequential.insert`` renumbers the layers after it, and ``del`` the ones after the removed one."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
    model.insert(0, nn.ReLU())
    del model[2]
    return model


BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "tied": Tied,
    "tied_backwards": TiedBackwards,
    "weight_norm": lambda: nn.Sequential(weight_norm(nn.Linear(4, 4)), nn.ReLU(), nn.Linear(4, 1)),
    "spectral_norm": lambda: nn.Sequential(nn.Linear(4, 4), nn.ReLU(), spectral_norm(nn.Linear(4, 1))),
    "replaced": replaced_head,
    "deepcopy": lambda: copy.deepcopy(nn.Sequential(Tied(), nn.Sequential(nn.Linear(10, 2)))),
    "unpickled": lambda: pickle.loads(pickle.dumps(nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 2))))),
    "swapped": swapped_by_hand,
    "inserted": inserted,
}


@pytest.mark.parametrize("build", BUILDERS.values(), ids=BUILDERS.keys())
def test_names_are_those_of_named_parameters(build: Callable[[], nn.Module]) -> None:
    tree = ModuleTree()
    tree.install()
    try:
        model = build()
    finally:
        tree.uninstall()
    expected = dict(model.named_parameters())
    params = list(expected.values())
    assert tree.names(params) == list(expected)
    assert all(tree.root(p) is model for p in params)


def test_a_compiled_model_keeps_its_own_names() -> None:
    """``model = torch.compile(model)``, then an optimizer on its parameters: the names
    and the root are the model's, without the wrapper's ``_orig_mod.`` prefix."""
    tree = ModuleTree()
    tree.install()
    try:
        model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
        compiled = torch.compile(model, backend="eager")
    finally:
        tree.uninstall()
    params = list(compiled.parameters())
    assert tree.names(params) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert all(tree.root(p) is model for p in params)


def test_a_moved_parameter_belongs_to_its_new_module() -> None:
    """spectral_norm registers the layer's weight under ``parametrizations.weight.original``
    and removes it from the layer: the parametrization's module owns it now."""
    tree = ModuleTree()
    tree.install()
    try:
        layer = spectral_norm(nn.Linear(4, 1))
    finally:
        tree.uninstall()
    original = layer.parametrizations.weight.original
    assert tree.owner(original) is layer.parametrizations.weight
    assert isinstance(original, torch.nn.Parameter)


def test_modules_built_around_a_parameter_each_iteration_are_not_remembered() -> None:
    """``nn.ParameterList([w])`` in a forward pass registers ``w`` with a new module each
    time: the modules that are gone must not pile up (memory, and time per registration)."""
    tree = ModuleTree()
    tree.install()
    try:
        model = nn.Linear(4, 1)
        for _ in range(100):
            nn.ParameterList([model.weight])
    finally:
        tree.uninstall()
    assert len(tree._param_owners[model.weight]) <= 2
    assert tree.names([model.weight]) == ["weight"]
