"""Bug: the backbone is unfrozen after 5 steps, but never added to the optimizer.

Fine-tuning starts with a frozen backbone and an optimizer built on the head; at
step 5 the backbone's requires_grad is turned on, and the `add_param_group` that
should follow is missing: the backbone gets gradients that nothing applies.
Expected (--every 10): not-in-optimizer at step 10 (the first detail step after the
unfreezing), optimizer 0, param backbone.0.weight.
"""

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.head = nn.Linear(32, 1)

    def forward(self, x):
        return self.head(self.backbone(x))


torch.manual_seed(0)
model = Net()
model.backbone.requires_grad_(False)
optimizer = torch.optim.AdamW(model.head.parameters(), lr=1e-2)
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
for step in range(30):
    if step == 5:
        model.backbone.requires_grad_(True)  # the optimizer.add_param_group(...) is missing
    xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
    model.zero_grad()
    loss = nn.functional.mse_loss(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.6f}")
