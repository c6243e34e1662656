"""Correct loop: skorch's NeuralNetRegressor.fit (it steps with a closure).

128 samples, batches of 32, no validation split, 3 epochs: 12 steps.
"""

import torch
from skorch import NeuralNetRegressor
from torch import nn

torch.manual_seed(0)
x = torch.randn(128, 8)
y = x.sum(dim=1, keepdim=True)
net = NeuralNetRegressor(
    nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1)),
    optimizer=torch.optim.SGD,
    lr=0.02,
    max_epochs=3,
    batch_size=32,
    train_split=None,
    verbose=0,
)
net.fit(x, y)
print(f"final loss {net.history[-1, 'train_loss']:.6f}")
