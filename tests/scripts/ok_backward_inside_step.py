"""Correct loop: a custom optimizer whose step runs a backward itself, with no closure.

A curvature estimate (Hutchinson's Hessian-vector product) backpropagates the
gradients, made with create_graph=True, inside step(). The backward inside the step
is part of it, not a sign that an earlier step raised: every step is recorded.
"""

import torch
from torch import nn


class HutchinsonSGD(torch.optim.SGD):
    @torch.no_grad()
    def step(self, closure=None):
        params = [p for group in self.param_groups for p in group["params"]]
        grads = [p.grad for p in params]
        probes = [torch.randint_like(p, 2) * 2 - 1 for p in params]
        saved = [g.detach().clone() for g in grads]
        for p in params:
            p.grad = None
        with torch.enable_grad():
            torch.autograd.backward(grads, probes)  # H v, into .grad
        for p, grad in zip(params, saved):
            self.state[p]["hv"] = p.grad.detach().clone()
            p.grad = grad
        return super().step()


torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
optimizer = HutchinsonSGD(model.parameters(), lr=0.1)
for _step in range(10):
    optimizer.zero_grad()
    loss = model(torch.randn(8, 4)).pow(2).mean()
    loss.backward(create_graph=True)
    optimizer.step()
    for p in model.parameters():
        p.grad = None  # create_graph made a reference cycle between each parameter and its gradient
print(f"final loss {loss.item():.6f}")
