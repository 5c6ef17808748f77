"""Where the data that ships with perfsim lives (the repo's folders, or a copy in the wheel)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent


def data_dir(name: str) -> Path:
    """The folder ``name`` (``hardware_specs``, ``workloads``, ``runtimes``, ``validation``)."""
    for candidate in (_PACKAGE.parent / name, _PACKAGE / "_data" / name):
        if candidate.is_dir():
            return candidate
    return _PACKAGE.parent / name


def zoo(name: str, suffix: str = ".yaml") -> dict[str, Path]:
    """Map of entry name → file for every ``*.yaml`` in the data folder ``name`` (listed again only
    when the folder changes: a file added or removed updates its modification time)."""
    folder = data_dir(name)
    try:
        stamp = os.stat(folder).st_mtime_ns
    except OSError:
        return {}
    return dict(_listing(str(folder), suffix, stamp))


@functools.lru_cache(maxsize=32)
def _listing(folder: str, suffix: str, stamp: int) -> tuple:
    return tuple((p.stem, p) for p in sorted(Path(folder).glob(f"*{suffix}")))
