"""Correct loop: fine-tuning with progressive unfreezing (ULMFiT; Lightning's BackboneFinetuning).

The optimizer starts with the head only; at steps 10 and 20 a frozen layer is
unfrozen and added to it as a new parameter group with a smaller learning rate.
"""

import os

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
for layer in (model[0], model[2]):
    layer.requires_grad_(False)
optimizer = torch.optim.AdamW(model[4].parameters(), lr=1e-2)
x = torch.randn(64, 8)
y = x.sum(dim=1, keepdim=True)
for step in range(30):
    if step in (10, 20):
        layer = model[2] if step == 10 else model[0]
        layer.requires_grad_(True)
        optimizer.add_param_group({"params": list(layer.parameters()), "lr": 1e-3 if step == 10 else 1e-4})
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.6f}")
if os.environ.get("STEPDBG_TEST_OUT"):
    torch.save(
        {"model": model.state_dict(), "opt": optimizer.state_dict(), "rng": torch.get_rng_state()},
        os.environ["STEPDBG_TEST_OUT"],
    )
