"""Correct loop: a sparse embedding trained with SparseAdam, the dense head with Adam.

nn.Embedding(sparse=True) produces sparse gradients, which SparseAdam requires.
"""

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(50, 8, sparse=True)
        self.head = nn.Linear(8, 1)

    def forward(self, tokens):
        return self.head(self.embedding(tokens).mean(dim=1))


torch.manual_seed(0)
model = Net()
tokens = torch.randint(0, 50, (256, 5))
y = (tokens.float().mean(dim=1, keepdim=True) - 25.0) / 15.0
sparse_optimizer = torch.optim.SparseAdam(list(model.embedding.parameters()), lr=1e-2)
dense_optimizer = torch.optim.Adam(model.head.parameters(), lr=1e-2)
for step in range(30):
    tb, yb = tokens[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
    sparse_optimizer.zero_grad()
    dense_optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(tb), yb)
    loss.backward()
    sparse_optimizer.step()
    dense_optimizer.step()
print(f"final loss {loss.item():.6f}")
