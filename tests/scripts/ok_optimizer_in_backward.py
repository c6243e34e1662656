"""Correct loop: the optimizer step fused into the backward pass (PyTorch tutorial "How to
save memory by fusing the optimizer step into the backward pass").

One optimizer per parameter, stepped and cleared from a post-accumulate-grad hook
as soon as that parameter's gradient is ready; the loop itself only calls backward.
Each optimizer's step consumes the gradient of the backward still in progress.
"""

import os

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
optimizers = {p: torch.optim.Adam([p], lr=1e-2, foreach=False) for p in model.parameters()}


def optimizer_hook(parameter: torch.Tensor) -> None:
    optimizers[parameter].step()
    optimizers[parameter].zero_grad()


for p in model.parameters():
    p.register_post_accumulate_grad_hook(optimizer_hook)
x = torch.randn(64, 8)
y = x.sum(dim=1, keepdim=True)
for _step in range(20):
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
print(f"final loss {loss.item():.6f}")
if os.environ.get("STEPDBG_TEST_OUT"):
    torch.save({"model": model.state_dict(), "rng": torch.get_rng_state()}, os.environ["STEPDBG_TEST_OUT"])
