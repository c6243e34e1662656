"""Correct loop: Pyro's SVI with ``pyro.optim.Adam``, as Pyro's tutorials write it.

``pyro.optim`` builds one torch Adam per parameter, lazily, the first time it steps
it: in the first iteration, after the backward, one optimizer after another, in the
order of a set of tensors (which changes from run to run). The optimizers born
during an iteration own that iteration's backward: no record without an optimizer,
every step 0 with its backward and loss, and no parameter taken for one no
optimizer holds. A regression network registered with ``pyro.module`` and an
``AutoNormal`` guide.

Saves (``STEPDBG_TEST_OUT``) the loss ``svi.step`` returned at each iteration.
"""

import os

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.optim import Adam
from torch import nn

pyro.set_rng_seed(0)
x = torch.randn(64, 3)
y = x.sum(dim=-1) + 0.1 * torch.randn(64)
net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))


def model(x, y):
    pyro.module("net", net)
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(net(x).squeeze(-1), scale), obs=y)


svi = SVI(model, AutoNormal(model), Adam({"lr": 0.01}), loss=Trace_ELBO())
losses = [svi.step(x, y) for _ in range(6)]
print(f"final loss {losses[-1]:.4f}")
if os.environ.get("STEPDBG_TEST_OUT"):
    torch.save({"losses": losses}, os.environ["STEPDBG_TEST_OUT"])
