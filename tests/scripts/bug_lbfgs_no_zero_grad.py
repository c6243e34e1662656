"""Bug: an LBFGS closure that never clears the gradients.

LBFGS evaluates the closure several times inside each ``step(closure)``; each
backward adds to the gradients the previous evaluation, and the previous step,
left: the step direction comes from a sum of stale gradients. Expected:
missing-zero-grad at step 1 (the first backward inside it adds to what step 0
consumed), optimizer 0, first parameter 0.weight; repeated on every later step.
"""

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
x = torch.randn(64, 4)
y = torch.sin(x.sum(dim=1, keepdim=True))
optimizer = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=4, history_size=10)


def closure():
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()  # forgets optimizer.zero_grad()
    return loss


for _ in range(6):
    loss = optimizer.step(closure)
print(f"final loss {loss.item():.6f}")
