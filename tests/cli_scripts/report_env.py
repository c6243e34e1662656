"""Prints what a script sees of how it was run, to compare `python` with `stepdbg run`."""

import json
import os
import sys

import sibling_module

print(
    json.dumps(
        {
            "name": __name__,
            "file": os.path.abspath(__file__),
            "argv": sys.argv,
            "path0": os.path.abspath(sys.path[0]),
            "sibling": sibling_module.VALUE,
        }
    )
)
