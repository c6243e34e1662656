"""Trains 2 steps, says it waits, and trains 2 more once a file named ``go`` is in the
current directory: runs started side by side that certainly overlap.

    python waits.py NAME
"""

import os
import sys
import time

from tiny_training import train

train(2)
print(f"{sys.argv[1]} waits", flush=True)
while not os.path.exists("go"):
    time.sleep(0.01)
train(2)
