"""Correct loop: pytorch-ignite's create_supervised_trainer and trainer.run.

128 samples in batches of 32, 3 epochs: 12 steps.
"""

import torch
from ignite.engine import create_supervised_trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
x = torch.randn(128, 8)
loader = DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=32)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.02)
trainer = create_supervised_trainer(model, optimizer, nn.functional.mse_loss)
state = trainer.run(loader, max_epochs=3)
print(f"final loss {state.output:.6f} iterations {state.iteration}")
