"""Correct: adversarial training (PGD), the attack's gradients taken with loss.backward().

Each attack iteration backpropagates into the input's perturbation, and into the
parameters' gradients too; those are cleared, unused, before the training backward,
one clear a step. Then the model trains on the perturbed batch. Expected: no anomaly.
"""

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
x = torch.randn(128, 8)
y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
epsilon, alpha = 0.1, 0.03
for step in range(30):
    xb, yb = x[(step * 16) % 128 :][:16], y[(step * 16) % 128 :][:16]
    delta = torch.zeros_like(xb, requires_grad=True)
    for _ in range(3):  # PGD-3
        nn.functional.cross_entropy(model(xb + delta), yb).backward()
        delta.data = (delta + alpha * delta.grad.sign()).clamp(-epsilon, epsilon)
        delta.grad.zero_()
    optimizer.zero_grad()  # the attack's gradients on the parameters
    loss = nn.functional.cross_entropy(model(xb + delta.detach()), yb)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.6f}")
