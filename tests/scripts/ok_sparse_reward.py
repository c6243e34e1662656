"""Correct loop: REINFORCE with a sparse reward.

Most episodes earn nothing, so their loss and every gradient are exactly zero;
the rare success gets an ordinary gradient. A jump from zero is not an explosion.
"""

import torch
from torch import nn

torch.manual_seed(0)
policy = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))
optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
for episode in range(60):
    observations = torch.randn(20, 4)
    actions = torch.distributions.Categorical(logits=policy(observations))
    reward = 1.0 if episode % 25 == 24 else 0.0  # the goal is rarely reached
    loss = -(actions.log_prob(actions.sample()) * reward).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.6f}")
