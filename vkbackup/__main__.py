"""`python -m vkbackup` is the same as the `vkbackup` console script."""

from __future__ import annotations

from vkbackup.cli.main import main

if __name__ == "__main__":
    main()
