"""Correct loop: a DCGAN-style GAN with two optimizers (pytorch/examples dcgan/main.py).

D: netD.zero_grad(), errD_real.backward(), errD_fake.backward() on fake.detach(), optimizerD.step().
G: netG.zero_grad(), errG.backward() through D, optimizerG.step().
errG's backward also writes into D's gradients; the next netD.zero_grad() clears them.
"""

import os

import torch
from torch import nn

torch.manual_seed(0)
nz = 4
netG = nn.Sequential(nn.Linear(nz, 16), nn.ReLU(), nn.Linear(16, 2))
netD = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1), nn.Sigmoid())
criterion = nn.BCELoss()
optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-3, betas=(0.5, 0.999))
optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-3, betas=(0.5, 0.999))
batch = 32
for _i in range(40):
    real = torch.randn(batch, 2) * 0.5 + 2.0
    # (1) Update D: maximize log(D(x)) + log(1 - D(G(z)))
    netD.zero_grad()
    label = torch.full((batch, 1), 1.0)
    errD_real = criterion(netD(real), label)
    errD_real.backward()
    noise = torch.randn(batch, nz)
    fake = netG(noise)
    label.fill_(0.0)
    errD_fake = criterion(netD(fake.detach()), label)
    errD_fake.backward()
    optimizerD.step()
    # (2) Update G: maximize log(D(G(z)))
    netG.zero_grad()
    label.fill_(1.0)
    errG = criterion(netD(fake), label)
    errG.backward()
    optimizerG.step()
print(f"final errD {(errD_real + errD_fake).item():.6f} errG {errG.item():.6f}")
if os.environ.get("STEPDBG_TEST_OUT"):
    torch.save(
        {
            "G": netG.state_dict(),
            "D": netD.state_dict(),
            "optD": optimizerD.state_dict(),
            "optG": optimizerG.state_dict(),
            "rng": torch.get_rng_state(),
        },
        os.environ["STEPDBG_TEST_OUT"],
    )
