"""Bug: weight decay is kept off the biases by splitting the parameters into groups,
and the no-decay group was never added: the biases are in no optimizer.

Expected: not-in-optimizer at step 0, optimizer 0, param body.0.bias (the first
bias with a gradient whose module's weight the optimizer holds).
"""

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential()
model.add_module("body", nn.Sequential(nn.Linear(8, 16), nn.ReLU()))
model.add_module("head", nn.Linear(16, 1))
decay = [p for name, p in model.named_parameters() if not name.endswith("bias")]
no_decay = [p for name, p in model.named_parameters() if name.endswith("bias")]
optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}], lr=1e-2)  # no_decay forgotten
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
for _step in range(15):
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.4f}")
