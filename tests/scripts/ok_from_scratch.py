"""Correct loop without optimizer or module: linear regression from scratch on raw tensors.

    python ok_from_scratch.py [inplace|rebind]

``inplace`` updates w and b in place and zeroes their gradients; ``rebind`` makes
new leaf tensors each iteration (``w = (w - lr * w.grad).detach().requires_grad_()``),
as many tutorials do. stepdbg finds the leaves from the autograd graph: every
record carries the gradients' global norm.
"""

import math
import os
import sys

import torch

mode = sys.argv[1] if len(sys.argv) > 1 else "inplace"
torch.manual_seed(0)
x = torch.randn(64, 3)
y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
w = torch.zeros(3, 1, requires_grad=True)
b = torch.zeros(1, requires_grad=True)
lr = 0.1
grad_norms = []
for _step in range(25):
    loss = ((x @ w + b - y) ** 2).mean()
    loss.backward()
    grad_norms.append(math.sqrt(float(w.grad.double().pow(2).sum() + b.grad.double().pow(2).sum())))
    with torch.no_grad():
        if mode == "inplace":
            w -= lr * w.grad
            b -= lr * b.grad
            w.grad.zero_()
            b.grad.zero_()
    if mode == "rebind":
        w = (w - lr * w.grad).detach().requires_grad_()
        b = (b - lr * b.grad).detach().requires_grad_()
print(f"final loss {loss.item():.6f}")
if os.environ.get("STEPDBG_TEST_OUT"):
    torch.save({"w": w, "b": b, "grad_norms": grad_norms}, os.environ["STEPDBG_TEST_OUT"])
