"""Bug: gradients cleared by hand (``p.grad = None``) between backward() and step().

No zero_grad call is involved: stepdbg sees it from gradient state, the step
finding none of the gradients that the backward just filled.
Expected: zero-grad-before-step at step 0, optimizer 0.
"""

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(30):
    xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
    loss = nn.functional.mse_loss(model(xb), yb)
    loss.backward()
    for param in model.parameters():
        param.grad = None  # meant to "reset" before the next batch, one line too early
    optimizer.step()
print(f"final loss {loss.item():.6f}")
