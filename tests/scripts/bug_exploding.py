"""Bug: a learning rate far too high for a quadratic; the iterates diverge.

loss = 0.5 * ||w||^2, so the gradient is w and SGD does w <- (1 - lr) w. With
lr = 3 each step multiplies w, and the gradient norm, by -2: starting from
||w|| = 2 the norm at step k is 2^(k+1). Expected: exploding-grad (a warning),
optimizer 0, at the first step whose norm passes stepdbg's absolute limit 1e8:
step 26 (2^27 = 1.3e8). Steady geometric growth keeps pace with the running
average, so the ratio test alone would not catch it. No nonfinite: the run
stops long before overflow.
"""

import torch
from torch import nn


class Quadratic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(4))

    def forward(self):
        return 0.5 * (self.w**2).sum()


model = Quadratic()
optimizer = torch.optim.SGD(model.parameters(), lr=3.0)
for _step in range(32):
    optimizer.zero_grad()
    loss = model()
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.6g}")
