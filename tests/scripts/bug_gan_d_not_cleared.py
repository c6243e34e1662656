"""Bug: a GAN whose discriminator's gradients are never cleared.

Only netG.zero_grad() is called. D's gradients keep accumulating, including what
errG.backward() wrote into them through D. Expected: missing-zero-grad at step 1
for optimizerD (optimizer 0, built and stepped first), param net.0.weight; nothing
for optimizerG.
"""

import torch
from torch import nn


class Discriminator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1), nn.Sigmoid())

    def forward(self, x):
        return self.net(x)


torch.manual_seed(0)
nz = 4
netG = nn.Sequential(nn.Linear(nz, 16), nn.ReLU(), nn.Linear(16, 2))
netD = Discriminator()
criterion = nn.BCELoss()
optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-3, betas=(0.5, 0.999))
optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-3, betas=(0.5, 0.999))
batch = 32
for _i in range(30):
    real = torch.randn(batch, 2) * 0.5 + 2.0
    # netD.zero_grad() is missing here
    errD_real = criterion(netD(real), torch.ones(batch, 1))
    errD_real.backward()
    fake = netG(torch.randn(batch, nz))
    errD_fake = criterion(netD(fake.detach()), torch.zeros(batch, 1))
    errD_fake.backward()
    optimizerD.step()
    netG.zero_grad()
    errG = criterion(netD(fake), torch.ones(batch, 1))
    errG.backward()
    optimizerG.step()
print(f"final errD {(errD_real + errD_fake).item():.6f} errG {errG.item():.6f}")
