"""Trains while printing to stdout and stderr, partial lines included, and writing around
Python's streams (os.write, a subprocess), for the live table tests."""

import os
import subprocess
import sys
import time

import torch

model = torch.nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)


def train_step() -> None:
    optimizer.zero_grad()
    model(torch.randn(8, 4)).pow(2).mean().backward()
    optimizer.step()
    time.sleep(0.02)


for i in range(40):
    train_step()
    print(f"line {i} [bold]not markup[/bold]", flush=True)
    if i % 10 == 0:
        print(f"err {i}", file=sys.stderr)
    if i % 10 == 5:  # as a DataLoader worker or a C++ library writes: not through sys.stdout
        os.write(1, f"fd {i}\n".encode())
        subprocess.run([sys.executable, "-c", f"print('child {i}')"], check=True)
    if i == 20:  # a progress bar: refreshes fall due while its line is partial, the table must wait
        print("progress 0%", end="", flush=True)
        for _ in range(20):
            train_step()
        print("\rprogress 100%", flush=True)
print("partial", end="")
sys.stdout.flush()
print(" done")
