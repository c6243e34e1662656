"""Trains in the main process and in forked children.

    python forks.py multiprocessing|os-fork

``multiprocessing``: a fork-context Process trains 5,000 steps (more than the
trace writer queues before writing) and exits as multiprocessing children do.
``os-fork``: a raw ``os.fork()`` child trains, then runs on to the end of the
script and exits through ``sys.exit``, as the parent does.
"""

import multiprocessing
import os
import sys

import torch
from torch import nn


def train(steps: int) -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(8, 4)
    for _ in range(steps):
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()


train(3)
if sys.argv[1] == "multiprocessing":
    child = multiprocessing.get_context("fork").Process(target=train, args=(5000,))
    child.start()
    child.join()
    print(f"child exit {child.exitcode}")
else:
    pid = os.fork()
    if pid == 0:
        train(5000)
        print("child done", flush=True)
        sys.exit(0)
    os.waitpid(pid, 0)
train(3)
print("parent done")
