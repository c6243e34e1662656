"""Correct loop: GSAM, whose ``step()`` runs the forward and backward passes itself.

A stand-in for pytorch_optimizer's ``GSAM`` (``pytorch_optimizer/optimizer/sam.py``:
``set_closure``, ``step``, ``perturb_weights``, ``gradient_decompose``,
``un_perturb``; its CPU path, without the BatchNorm and distributed parts), used as
its documentation shows: ``optimizer.set_closure(loss_fn, x, y)`` then
``optimizer.step()`` with no argument. The step clears the gradients through the
base optimizer, backpropagates once, perturbs the weights, clears and
backpropagates again, decomposes the gradients in place, restores the weights and
steps the base optimizer, which shares its parameter groups. The backward passes
inside the step are that step's: each record has one (the last, after the clear),
its loss, and the norm of the gradients the base optimizer stepped on.

Saves (``STEPDBG_TEST_OUT``) each step's last loss evaluated and the float64 norm of
the gradients it stepped on.
"""

import math
import os

import torch
from torch import nn


class GSAM(torch.optim.Optimizer):
    def __init__(self, params, base_optimizer, model, rho, alpha=0.4, perturb_eps=1e-12):
        self.model = model
        self.rho_t = rho
        self.alpha = alpha
        self.perturb_eps = perturb_eps
        self.forward_backward_func = None
        self.base_optimizer = base_optimizer
        super().__init__(params, {})
        self.param_groups = self.base_optimizer.param_groups

    @torch.no_grad()
    def grad_norm(self, by=None):
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        grads = [p.grad if by is None else self.state[p][by] for p in params]
        return torch.stack([g.norm() for g in grads]).square().sum().sqrt()

    @torch.no_grad()
    def perturb_weights(self, rho):
        scale = rho / (self.grad_norm() + self.perturb_eps)
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p].pop("old_g", None)
                if p.grad is None:
                    continue
                self.state[p]["old_g"] = p.grad.clone()
                e_w = p.grad * scale.to(p)
                p.add_(e_w)
                self.state[p]["e_w"] = e_w

    @torch.no_grad()
    def un_perturb(self):
        for group in self.param_groups:
            for p in group["params"]:
                if "e_w" in self.state[p]:
                    p.sub_(self.state[p].pop("e_w"))

    @torch.no_grad()
    def gradient_decompose(self, alpha):
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        inner_prod = sum(torch.sum(self.state[p]["old_g"] * p.grad) for p in params)
        new_grad_norm, old_grad_norm = self.grad_norm(), self.grad_norm(by="old_g")
        cosine = inner_prod / (new_grad_norm * old_grad_norm + self.perturb_eps)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                vertical = self.state[p]["old_g"] - cosine * old_grad_norm * p.grad / (new_grad_norm + self.perturb_eps)
                p.grad.add_(vertical, alpha=-alpha)

    @torch.no_grad()
    def set_closure(self, loss_fn, inputs, targets):
        def get_grad():
            self.base_optimizer.zero_grad()
            with torch.enable_grad():
                outputs = self.model(inputs)
                loss = loss_fn(outputs, targets)
            loss.backward()
            return outputs, loss.detach()

        self.forward_backward_func = get_grad

    @torch.no_grad()
    def step(self, closure=None):
        get_grad = closure or self.forward_backward_func
        outputs, loss = get_grad()
        self.perturb_weights(rho=self.rho_t)
        get_grad()
        self.gradient_decompose(self.alpha)
        self.un_perturb()
        self.base_optimizer.step()
        return outputs, loss


torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
base_optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
lr_scheduler = torch.optim.lr_scheduler.StepLR(base_optimizer, step_size=4, gamma=0.5)
optimizer = GSAM(model.parameters(), base_optimizer, model, rho=0.05)
x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
evaluated, losses, grad_norms = [], [], []


def loss_fn(outputs, targets):
    loss = nn.functional.cross_entropy(outputs, targets)
    evaluated.append(loss.item())
    return loss


for _ in range(8):
    optimizer.set_closure(loss_fn, x, y)
    predictions, loss = optimizer.step()
    losses.append(evaluated[-1])
    grad_norms.append(math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters())))
    lr_scheduler.step()
    optimizer.rho_t = 0.05 * lr_scheduler.get_last_lr()[0] / 0.1  # ProportionScheduler: rho follows the lr
print(f"final loss {loss.item():.6f}")
if os.environ.get("STEPDBG_TEST_OUT"):
    torch.save({"losses": losses, "grad_norms": grad_norms}, os.environ["STEPDBG_TEST_OUT"])
