"""Correct loop: AdamW with a cosine schedule, one zero_grad/backward/step per batch.

The script also measures, in float64, the global gradient norm each step consumes,
so the tests can check stepdbg's grad_norm. With STEPDBG_TEST_OUT set it saves the
final model and optimizer state, the RNG state and those norms there.
"""

import math
import os

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
steps = 40
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
grad_norms = []
for _step in range(steps):
    index = torch.randint(0, len(x), (32,))
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(x[index]), y[index])
    loss.backward()
    grad_norms.append(math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters())))
    optimizer.step()
    scheduler.step()
print(f"final loss {loss.item():.6f}")
if os.environ.get("STEPDBG_TEST_OUT"):
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "grad_norms": grad_norms,
        },
        os.environ["STEPDBG_TEST_OUT"],
    )
