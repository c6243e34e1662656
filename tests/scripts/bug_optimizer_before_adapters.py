"""Bug: the optimizer is built before the model is adapted (LoRA, as peft's get_peft_model does it).

Adapting freezes every weight the optimizer holds and adds low-rank adapters in
modules of their own: the adapters get gradients but no optimizer holds them, and
each step is a no-op. Nothing trains. Expected: not-in-optimizer at step 0,
optimizer 0, param blocks.0.lora_a.weight.
"""

import torch
from torch import nn


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update (lora_b starts at zero)."""

    def __init__(self, base: nn.Linear, rank: int = 2) -> None:
        super().__init__()
        self.base = base
        self.lora_a = nn.Linear(base.in_features, rank, bias=False)
        self.lora_b = nn.Linear(rank, base.out_features, bias=False)
        nn.init.zeros_(self.lora_b.weight)

    def forward(self, x):
        return self.base(x) + self.lora_b(self.lora_a(x))


torch.manual_seed(0)
model = nn.Module()
model.blocks = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)  # too early
model.requires_grad_(False)
model.blocks[0] = LoRALinear(model.blocks[0])
model.blocks[2] = LoRALinear(model.blocks[2])
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
for step in range(15):
    xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model.blocks(xb), yb)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.6f}")
