"""Steps forever, slowly: a run to kill with SIGKILL and then read back."""

import time

import torch

model = torch.nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
step = 0
while True:
    optimizer.zero_grad()
    model(torch.randn(8, 4)).pow(2).mean().backward()
    optimizer.step()
    step += 1
    print(f"step {step}", flush=True)
    time.sleep(0.05)
