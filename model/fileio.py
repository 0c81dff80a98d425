"""File-writing helpers shared by every layer (TF-free).

Outputs are written to a temporary name (tempfile.mkstemp, which creates files with mode 0600)
and renamed into place, so a kill never leaves half a file. `as_umask_allows` gives such a file
the mode an ordinary `open(path, "w")` would have (0666 minus the process umask) before the
rename, so outputs follow the user's umask like any other program's.
"""

from __future__ import annotations

import os


def umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_umask_allows(path) -> None:
    """chmod a freshly created file to 0666 & ~umask, a folder (tempfile.mkdtemp's are 0700) to 0777 & ~umask."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask())
