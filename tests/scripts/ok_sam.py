"""Correct loop: sharpness-aware minimization (SAM, as davda54/sam publishes it).

SAM is an optimizer built around another one on the same parameter groups: one
backward, a step up the gradient, clear, a second backward at the perturbed
weights, then the inner optimizer's step. Clearing through either optimizer
clears both's gradients; the inner step consumes the second backward only. The lr
scheduler is built on the inner optimizer.

    python ok_sam.py two-steps|closure
"""

import os
import sys

import torch
from torch import nn


class SAM(torch.optim.Optimizer):
    def __init__(self, params, base_optimizer, rho=0.05, **kwargs):
        super().__init__(params, dict(rho=rho, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)

    @torch.no_grad()
    def first_step(self, zero_grad=False):
        grad_norm = torch.norm(
            torch.stack([p.grad.norm() for g in self.param_groups for p in g["params"] if p.grad is not None])
        )
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + 1e-12)
            for p in group["params"]:
                if p.grad is not None:
                    self.state[p]["old_p"] = p.data.clone()
                    p.add_(p.grad * scale)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad=False):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.data = self.state[p]["old_p"]
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def step(self, closure=None):
        self.first_step(zero_grad=True)
        torch.enable_grad()(closure)()
        self.second_step()


torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
optimizer = SAM(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer.base_optimizer, step_size=5, gamma=0.5)
x, y = torch.randn(64, 8), torch.randn(64, 1)
for _ in range(20):
    nn.functional.mse_loss(model(x), y).backward()
    if sys.argv[1] == "two-steps":
        optimizer.first_step(zero_grad=True)
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.second_step(zero_grad=True)
    else:
        optimizer.step(lambda: nn.functional.mse_loss(model(x), y).backward())
        optimizer.zero_grad()
    scheduler.step()  # built on the inner optimizer, which steps inside SAM's step
print(f"final loss {nn.functional.mse_loss(model(x), y).item():.6f}")
if os.environ.get("STEPDBG_TEST_OUT"):
    torch.save({"model": model.state_dict(), "rng": torch.get_rng_state()}, os.environ["STEPDBG_TEST_OUT"])
