"""Correct: multi-task gradient surgery (PCGrad), and a batch skipped now and then.

Each task's gradients come from a backward of their own, cleared after being copied out;
the step uses their combination, set by hand, so no backward pass was wasted. Every 7th
step the first batch is judged bad and its gradients cleared before another is drawn
(one discarded backward, not a habit). Expected: no anomaly.
"""

import torch
from torch import nn

torch.manual_seed(0)
trunk = nn.Sequential(nn.Linear(8, 16), nn.Tanh())
heads = nn.ModuleList(nn.Linear(16, 1) for _ in range(2))
params = [*trunk.parameters(), *heads.parameters()]
optimizer = torch.optim.SGD(params, lr=1e-2)
x = torch.randn(64, 8)
targets = [x.sum(dim=1, keepdim=True), x[:, :1] - x[:, 1:2]]


def project(g: torch.Tensor, onto: torch.Tensor) -> torch.Tensor:
    dot = torch.dot(g, onto)
    return g - dot / onto.dot(onto).clamp_min(1e-12) * onto if dot < 0 else g


for step in range(30):
    if step % 7 == 3:  # a bad batch: its gradients are thrown away
        optimizer.zero_grad()
        nn.functional.mse_loss(heads[0](trunk(x * 1e3)), targets[0]).backward()
    task_grads = []
    for head, target in zip(heads, targets):
        optimizer.zero_grad()
        nn.functional.mse_loss(head(trunk(x)), target).backward()
        task_grads.append(
            torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        )
    a, b = task_grads
    combined = project(a, b) + project(b, a)
    offset = 0
    for p in params:
        p.grad = combined[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    optimizer.step()
print(f"final grad norm {combined.norm().item():.6f}")
