"""Correct loop, run with warnings as errors: a learned learning rate through a differentiable optimizer.

The inner optimizer steps non-leaf fast weights (clones of the base weights), beside a
frozen leaf it holds too, with an lr that is a tensor requiring grad, so that the
meta-loss reaches both. Reading a
non-leaf tensor's .grad, or converting a tensor that requires grad to a float, makes
torch warn: stepdbg must not, and the script, strict about warnings, prints none.
"""

import warnings

import torch

warnings.simplefilter("error")  # as under python -W error, or pytest's filterwarnings = error
torch.manual_seed(0)
base = torch.randn(4, requires_grad=True)
log_lr = torch.tensor(-2.0, requires_grad=True)
frozen = torch.zeros(4)
for iteration in range(3):
    fast = base.clone()
    inner = torch.optim.SGD([frozen, fast], lr=log_lr.exp(), differentiable=True)
    for _k in range(2):
        (grad,) = torch.autograd.grad((fast - 1).pow(2).sum(), [fast], create_graph=True)
        fast.grad = grad
        inner.step()
    meta_loss = (fast - 1).pow(2).sum()
    base.grad = log_lr.grad = fast.grad = None
    meta_loss.backward()
    with torch.no_grad():
        base -= 0.1 * base.grad
        log_lr -= 0.1 * log_lr.grad
    print(iteration, round(meta_loss.item(), 6))
