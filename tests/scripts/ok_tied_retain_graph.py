"""Correct loop: tied input/output weights and two backward passes over one graph.

The decoder shares the embedding's weight; the first loss is backpropagated with
retain_graph=True, the second through the same graph; one step consumes both.
"""

import torch
from torch import nn


class TiedAutoencoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(20, 8)
        self.mix = nn.Linear(8, 8)
        self.decoder = nn.Linear(8, 20, bias=False)
        self.decoder.weight = self.embedding.weight  # tied

    def forward(self, tokens):
        hidden = torch.tanh(self.mix(self.embedding(tokens)))
        return hidden, self.decoder(hidden)


torch.manual_seed(0)
model = TiedAutoencoder()
tokens = torch.randint(0, 20, (256,))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
for step in range(30):
    tb = tokens[(step * 32) % 256 :][:32]
    optimizer.zero_grad()
    hidden, logits = model(tb)
    reconstruction = nn.functional.cross_entropy(logits, tb)
    sparsity = hidden.abs().mean()
    reconstruction.backward(retain_graph=True)
    (0.1 * sparsity).backward()
    optimizer.step()
print(f"final loss {reconstruction.item():.6f}")
