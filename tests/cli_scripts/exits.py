"""Ends the way argv[1] says, after two optimizer steps, to test exit codes and end records."""

import os
import sys

import torch

model = torch.nn.Linear(2, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(2):
    optimizer.zero_grad()
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
print("trained", flush=True)
how = sys.argv[1]
if how == "exit3":
    sys.exit(3)
if how == "exit-message":
    sys.exit("goodbye")
if how == "raise":
    raise ValueError("boom from the user's script")
if how == "interrupt":
    raise KeyboardInterrupt
if how == "os-exit":  # no finally, no atexit: how some launchers end their processes
    os._exit(4)
