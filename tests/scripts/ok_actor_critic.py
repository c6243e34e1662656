"""Correct loop: actor-critic with two models and two optimizers, both losses backpropagated
before both steps (the critic's value detached in the actor's loss).

Each backward reaches one model only: each optimizer's step consumes one backward,
and its loss is its own model's, not the sum of both.
"""

import os

import torch
from torch import nn

torch.manual_seed(0)
actor = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))
critic = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
actor_opt = torch.optim.Adam(actor.parameters(), lr=1e-3)
critic_opt = torch.optim.Adam(critic.parameters(), lr=1e-3)
losses: dict[str, list[float]] = {"actor": [], "critic": []}
for _step in range(20):
    states, returns = torch.randn(32, 4), torch.randn(32, 1)
    values = critic(states)
    dist = torch.distributions.Categorical(logits=actor(states))
    advantage = (returns - values).detach()
    actor_loss = -(dist.log_prob(dist.sample()) * advantage.squeeze(1)).mean()
    critic_loss = nn.functional.mse_loss(values, returns)
    actor_opt.zero_grad()
    critic_opt.zero_grad()
    actor_loss.backward()
    critic_loss.backward()
    actor_opt.step()
    critic_opt.step()
    losses["actor"].append(actor_loss.item())
    losses["critic"].append(critic_loss.item())
print(f"final losses {actor_loss.item():.6f} {critic_loss.item():.6f}")
if os.environ.get("STEPDBG_TEST_OUT"):
    torch.save(losses, os.environ["STEPDBG_TEST_OUT"])
