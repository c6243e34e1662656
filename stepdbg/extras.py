"""Optional extras: a command that needs a package stepdbg does not install says how to get it."""

from __future__ import annotations

import importlib


class MissingExtra(Exception):
    """The one line the user sees: which command needs what, and the pip command that installs it."""


def require(package: str, command: str, extra: str) -> None:
    """Import ``package`` or raise `MissingExtra`, naming ``stepdbg[extra]``."""
    try:
        importlib.import_module(package)
    except ImportError:
        raise MissingExtra(f"{command} needs {package}: pip install 'stepdbg[{extra}]'") from None
