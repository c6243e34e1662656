"""Bug: an auxiliary head is in the optimizer but never used in the loss.

Expected: unused-param after --patience steps with no gradient (default 20: at
step 19), optimizer 0, param aux_head.weight.
"""

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.head = nn.Linear(16, 1)
        self.aux_head = nn.Linear(16, 4)  # meant for an auxiliary loss that was never added

    def forward(self, x):
        return self.head(self.body(x))


torch.manual_seed(0)
model = Net()
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
for step in range(30):
    xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.6f}")
