"""Correct loop: accelerate with Accelerator(gradient_accumulation_steps=4).

Inside accelerator.accumulate(model), optimizer.step() and zero_grad() are called
on every micro-batch but act only every 4th: 32 batches make 8 real steps, each
consuming 4 backward passes.
"""

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
accelerator = Accelerator(cpu=True, gradient_accumulation_steps=4)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
x = torch.randn(256, 8)
loader = DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=8)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
for xb, yb in loader:
    with accelerator.accumulate(model):
        loss = nn.functional.mse_loss(model(xb), yb)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
print(f"final loss {loss.item():.6f}")
