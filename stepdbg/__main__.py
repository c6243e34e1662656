"""``python -m stepdbg``: the same as the ``stepdbg`` command."""

from .cli import main

if __name__ == "__main__":
    main()
