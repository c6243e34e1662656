"""Correct loop: Linear layers with a bias, each followed by BatchNorm (as torchvision's vgg*_bn).

BatchNorm subtracts the batch mean, so the bias before it gets a gradient that is
zero but for rounding (~1e-8 of the weight's): a wasted parameter, not a vanishing
gradient. Its layer's weight gets a healthy gradient.

    python ok_bias_before_batchnorm.py [copy]

``copy`` trains a deep copy of the model (fine-tuning from a kept pretrained one):
the copy's modules are registered nowhere, and its layers must still be its layers.
"""

import copy
import sys

import torch
from torch import nn

torch.manual_seed(0)
pretrained = nn.Sequential(
    nn.Linear(8, 64),
    nn.BatchNorm1d(64),
    nn.ReLU(),
    nn.Linear(64, 64),
    nn.BatchNorm1d(64),
    nn.ReLU(),
    nn.Linear(64, 1),
)
model = copy.deepcopy(pretrained) if sys.argv[1:] == ["copy"] else pretrained
optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
x = torch.randn(128, 8)
y = x.sum(dim=1, keepdim=True)
for _step in range(30):
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.6f}")
