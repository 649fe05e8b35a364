"""Files that may hold personal data or credentials are created readable by their owner only.

The state database holds emails and a sealed OAuth token, the outbox holds request bodies
with emails: both are created 0600 whatever the process's umask (a umask can leave
group/other bits set, or even strip the owner's), and an existing file is left as it is, so
an operator's deliberate chmod survives.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_MODE = 0o600


def create_private(path: Path) -> bool:
    """Create ``path`` empty with mode 0600 if it does not exist; True if it was created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, PRIVATE_MODE)  # the umask applied to os.open's mode; undo it
    finally:
        os.close(fd)
    return True
