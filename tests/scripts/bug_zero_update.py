"""Bug: the head's param group has lr 0 for the whole run, so it never moves.

(Meant to be a warm-up, but nothing ever raises it.) Expected: zero-update after
--patience steps (default 20: at step 19), optimizer 0.
"""

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.head = nn.Linear(16, 1)

    def forward(self, x):
        return self.head(self.body(x))


torch.manual_seed(0)
model = Net()
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
optimizer = torch.optim.SGD(
    [{"params": model.body.parameters()}, {"params": model.head.parameters(), "lr": 0.0}], lr=0.01, momentum=0.9
)
for step in range(30):
    xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.6f}")
