"""Prints what a script sees of how it was run, to compare `python` with `stepdbg run`."""

import json
import sys

import sibling_module

print(
    json.dumps(
        {
            "name": __name__,
            "file": __file__,
            "code_file": sys._getframe().f_code.co_filename,
            "argv": sys.argv,
            "path0": sys.path[0],
            "sibling": sibling_module.VALUE,
            "builtins": type(__builtins__).__name__,
        }
    )
)
