"""Bug: log(0) in the loss at step 7.

A binary cross-entropy written by hand masks padded samples *before* the log
instead of after it. Step 7's batch is the first with a padded sample: its
log(0) makes the loss inf and the gradients NaN, and from then on the weights.
Expected: nonfinite at step 7, optimizer 0, param 0.weight (the first
parameter whose gradient is not finite).
"""

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
x = torch.randn(320, 8)
y = (x.sum(dim=1, keepdim=True) > 0).float()
keep = torch.ones(320, 1)
keep[7 * 32 + 5] = 0.0  # a padded sample in step 7's batch
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
for step in range(10):
    xb, yb, kb = x[step * 32 :][:32], y[step * 32 :][:32], keep[step * 32 :][:32]
    optimizer.zero_grad()
    p = torch.sigmoid(model(xb)) * kb  # bug: the mask belongs on the loss terms, after the log
    loss = -(yb * torch.log(p) + (1 - yb) * torch.log(1 - p)).mean()
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.6f}")
