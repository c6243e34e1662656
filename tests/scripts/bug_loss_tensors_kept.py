"""Bug: each step's validation loss is kept as a tensor (not loss.item()) in a list, computed
without torch.no_grad(): every kept loss holds its graph, and the graph the activations it
saved (256 KiB a step here), so memory grows step after step.

Expected: memory-growth once the first 8 stretches of 25 steps after the 10 warm-up
steps are seen (step 209), optimizer 0. ``item``: the same loop keeping loss.item(), a
float: memory stays flat, and stepdbg silent.
"""

import sys

import torch
from torch import nn

keep = sys.argv[1] if len(sys.argv) > 1 else "tensor"
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
x, x_val = torch.randn(64, 64), torch.randn(1024, 64)
y, y_val = x.sum(dim=1, keepdim=True), x_val.sum(dim=1, keepdim=True)
val_losses = []
for _ in range(230):
    optimizer.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()
    val_loss = nn.functional.mse_loss(model(x_val), y_val)
    val_losses.append(val_loss if keep == "tensor" else val_loss.item())
print(f"last validation loss {float(val_losses[-1]):.4f}")
