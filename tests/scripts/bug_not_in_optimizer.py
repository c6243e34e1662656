"""Bug: the classifier layer is replaced after the optimizer was built.

The new model.fc gets gradients but no optimizer holds it, so it never trains.
Expected: not-in-optimizer at step 0, optimizer 0, param fc.weight. (15 steps:
fewer than --patience, so the old fc's parameters, which the optimizer still
holds and which no longer get gradients, do not also raise unused-param.)
"""

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.features(x))


torch.manual_seed(0)
model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
model.fc = nn.Linear(16, 1)  # new task head, after the optimizer: not trained
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
for step in range(15):
    xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.6f}")
