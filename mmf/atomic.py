"""Atomic files: write under a temporary name, then rename over the target, and clean up after the
writers that died in between.

Every file the project writes atomically (checkpoints, token files, tokenizers, meta.json) is first
written as `<target>.tmp-<pid>`, where pid is the writer's process id, then renamed with os.replace
(atomic on POSIX). A writer killed between the two (kill -9, power loss, a full disk) leaves its
temporary file behind; `remove_stale_temp_files` deletes those of processes that no longer exist and
never touches one whose writer is still running (another run saving into the same directory).
"""
from __future__ import annotations

import os
import re

TEMP_SUFFIX = re.compile(r"\.tmp-(\d+)$")


def temp_name(path: str) -> str:
    """The temporary name this process writes `path` under before renaming it."""
    return f"{path}.tmp-{os.getpid()}"


def write_text_atomic(path: str, text: str) -> None:
    """Write text to path so that a reader sees the old file or the whole new one, never a part:
    written and fsync'ed under temp_name(path), then renamed over it."""
    tmp = temp_name(path)
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def process_exists(pid: int) -> bool:
    """True if a process with this id exists (or might: then we keep its files)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)                          # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:                      # exists, but belongs to someone else
        return True
    except OSError:                              # cannot tell: keep the file
        return True
    return True


def remove_stale_temp_files(directory: str) -> list[str]:
    """Delete `*.tmp-<pid>` files in `directory` whose process is gone; returns the paths removed."""
    removed = []
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for name in names:
        m = TEMP_SUFFIX.search(name)
        if not m or int(m.group(1)) == os.getpid() or process_exists(int(m.group(1))):
            continue
        path = os.path.join(directory, name)
        try:
            if os.path.isfile(path) and not os.path.islink(path):
                os.remove(path)
                removed.append(path)
        except FileNotFoundError:                # another process cleaned it first
            pass
    return removed
