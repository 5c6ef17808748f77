"""One writer per sweep output: a lock file ``OUT.lock`` beside it, holding the writer's pid and host.

The lock is created whole or not at all (written to a temporary file, then hard-linked to its
name, which fails if the name exists), so a reader never sees half a lock. A lock left by a run
that was killed is stale when it names this host and a pid that no longer runs; it is then taken
over. A lock of another host cannot be checked: the message says who holds it and how to clear it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path

from perfsim.errors import InputError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    except (OSError, OverflowError, ValueError):
        return False
    return True


def _holder(path: Path):
    """The lock's contents (``{pid, host, started, token}``), or None when it is unreadable."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def _create(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` if it does not exist; False if it does."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:  # a file system without hard links: an exclusive create instead
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            try:
                out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(out, "w") as f:
                f.write(text)
        return True
    finally:
        os.unlink(tmp)


@contextlib.contextmanager
def output_lock(target: Path, field: str = "--out"):
    """Hold ``target``'s lock for the block; refuse (:class:`InputError`) while another run holds it."""
    path = target.with_name(target.name + ".lock")
    host = socket.gethostname()
    token = uuid.uuid4().hex
    text = json.dumps({"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                       "token": token})
    for _ in range(3):  # a stale lock is removed and the lock taken again
        if _create(path, text):
            break
        holder = _holder(path)
        if holder is not None and holder.get("host") == host and not _alive(holder["pid"]):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        if holder is None:
            raise InputError(f"{path} exists but names no writer; if no sweep is writing {target}, remove it",
                             field=field)
        raise InputError(f"another sweep (pid {holder['pid']} on {holder.get('host')}, started "
                         f"{holder.get('started')}) is writing {target}; wait for it to finish, or remove {path} "
                         "if that run is gone", field=field)
    else:  # pragma: no cover - three stale locks in a row
        raise InputError(f"cannot take the lock {path}", field=field)
    try:
        yield path
    finally:
        holder = _holder(path)
        if holder is not None and holder.get("token") == token:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
