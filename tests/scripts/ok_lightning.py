"""Correct loops: Lightning's Trainer.fit, automatic optimization, on CPU.

Two fits in one process (Lightning's import is slow): the first steps once per
batch, the second with accumulate_grad_batches=2. 64 samples in batches of 16
make 4 batches an epoch; 3 epochs: 12 steps, then 6 steps of 2 backward passes.
"""

import logging
import warnings

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

logging.getLogger("lightning").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", ".*does not have many workers.*")


class Regressor(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))

    def training_step(self, batch, batch_index):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def fit(accumulate: int) -> float:
    model = Regressor()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=3,
        accumulate_grad_batches=accumulate,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )
    trainer.fit(model, DataLoader(dataset, batch_size=16))
    return trainer.global_step


torch.manual_seed(0)
x = torch.randn(64, 8)
dataset = TensorDataset(x, x.sum(dim=1, keepdim=True))
print(f"steps {fit(1)} and {fit(2)}")
