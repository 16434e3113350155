"""`caixa ...` with a hostile writer who swaps files at the worst moment: right before each
claim's rename, after the watcher and the rules have looked at the file. A file whose name
starts with `swap-` becomes a symlink to the file CAIXA_TEST_SECRET names, and a folder named
`swapdir` becomes a symlink to the secret's folder (which holds a file of the same name)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from caixa.daemon import workarea

claim = workarea.WorkArea.claim


def swapped_first(self: workarea.WorkArea, path: Path, *args: object, **kwargs: object) -> Path:
    secret = Path(os.environ["CAIXA_TEST_SECRET"])
    if path.name.startswith("swap-"):
        path.unlink()
        path.symlink_to(secret)
    elif path.parent.name == "swapdir":
        path.parent.rename(secret.parent.with_name("swapdir-was"))  # out of the inbox
        path.parent.symlink_to(secret.parent, target_is_directory=True)
    return claim(self, path, *args, **kwargs)


workarea.WorkArea.claim = swapped_first  # type: ignore[method-assign]

if __name__ == "__main__":
    from caixa.cli import main

    sys.argv = ["caixa", *sys.argv[2:]]  # argv[1]: the caixa script this stands in for
    main()
