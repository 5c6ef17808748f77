"""Where the data that ships with perfsim lives (the repo's folders, or a copy in the wheel)."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent


def data_dir(name: str) -> Path:
    """The folder ``name`` (``hardware_specs``, ``workloads``, ``runtimes``, ``validation``)."""
    for candidate in (_PACKAGE.parent / name, _PACKAGE / "_data" / name):
        if candidate.is_dir():
            return candidate
    return _PACKAGE.parent / name


def zoo(name: str, suffix: str = ".yaml") -> dict[str, Path]:
    """Map of entry name → file for every ``*.yaml`` in the data folder ``name``."""
    folder = data_dir(name)
    return {p.stem: p for p in sorted(folder.glob(f"*{suffix}"))} if folder.is_dir() else {}
