"""Where the data that ships with perfsim lives (the repo's folders, or a copy in the wheel)."""

from __future__ import annotations

import contextvars
import functools
import os
import stat
from pathlib import Path
from types import MappingProxyType

from perfsim.errors import InputError, shown

_PACKAGE = Path(__file__).resolve().parent.parent


def data_dir(name: str) -> Path:
    """The folder ``name`` (``hardware_specs``, ``workloads``, ``runtimes``, ``validation``)."""
    return _data_dir(name)


@functools.lru_cache(maxsize=16)
def _data_dir(name: str) -> Path:
    """:func:`data_dir`, looked up once per process: the package and its data do not move."""
    for candidate in (_PACKAGE.parent / name, _PACKAGE / "_data" / name):
        if candidate.is_dir():
            return candidate
    return _PACKAGE.parent / name


def zoo(name: str, suffix: str = ".yaml") -> dict[str, Path]:
    """Map of entry name → file for every ``*.yaml`` in the data folder ``name`` (listed again only
    when the folder changes: a file added or removed updates its modification time)."""
    folder = _folder(name)
    try:
        stamp = os.stat(folder).st_mtime_ns
    except OSError:
        return {}
    return dict(_listing(folder, suffix, stamp))


@functools.lru_cache(maxsize=16)
def _folder(name: str) -> str:
    return str(_data_dir(name))


@functools.lru_cache(maxsize=32)
def _listing(folder: str, suffix: str, stamp: int) -> MappingProxyType:
    return MappingProxyType({p.stem: p for p in sorted(Path(folder).glob(f"*{suffix}"))})


#: the specs read in the call under way, by kind, reference and field (None outside :func:`reading_once`)
_READ: contextvars.ContextVar = contextvars.ContextVar("perfsim_specs_read", default=None)


def reading_once(fn):
    """``fn`` reading each spec once per call: a spec named again by the same zoo name or file in the
    same call is the one read first, without listing its folder or stating its file again (one call
    sees one version of each file; the next call reads them afresh)."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if _READ.get() is not None:
            return fn(*args, **kwargs)
        token = _READ.set({})
        try:
            return fn(*args, **kwargs)
        finally:
            _READ.reset(token)

    return call


def read_once(kind: str, load, ref, field: str):
    """``load(ref, field)``; within :func:`reading_once`, for a name or path, what it gave earlier in
    the call for the same ``kind``, ``ref`` and ``field``."""
    read = _READ.get()
    if read is None or ref.__class__ is not str and not isinstance(ref, Path):
        return load(ref, field)
    key = (kind, ref, field)
    spec = read.get(key)
    if spec is None:
        spec = read[key] = load(ref, field)
    return spec


#: a spec, model or trace file larger than this is not one (the largest shipped spec is a few kB)
MAX_FILE_BYTES = 64 << 20


def _where(path, field) -> dict:
    return {"file": os.fspath(path), "field": field}


def read_text(path, field: str | None = None, limit: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of the regular file ``path``.

    The file is opened without blocking and checked to be a regular file before a byte is read,
    so a FIFO, a device or a folder is refused instead of hanging or reading without end.

    Raises
    ------
    InputError
        The file is missing, unreadable, not a regular file, larger than ``limit`` bytes, not
        UTF-8 text, or its name is one the OS refuses (a NUL byte, too long).
    """
    where = _where(path, field)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except ValueError:
        raise InputError("the file name holds a NUL byte", **where) from None
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", **where) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError("not a regular file (a folder, a pipe or a device)", **where)
        if info.st_size > limit:
            raise InputError(f"{info.st_size:,} bytes; a file read here holds at most {limit:,}", **where)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", **where) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise InputError(f"more than {limit:,} bytes; a file read here holds at most {limit:,}", **where)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start} is {data[exc.start:exc.start + 1]!r})", **where) \
            from None


def check_regular_file(path, field: str) -> str:
    """``path`` as a string, if it names an existing regular file (not a FIFO, a device or a folder)."""
    where = _where(path, field)
    try:
        info = os.stat(path)
    except ValueError:
        raise InputError("the file name holds a NUL byte", **where) from None
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", **where) from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError("not a regular file (a folder, a pipe or a device)", **where)
    return os.fspath(path)


def check_writable(path, field: str) -> Path:
    """``path`` as a :class:`~pathlib.Path` a new file may be written to: a name the OS takes, not a
    folder, in an existing folder this process may write in."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise InputError(f"expected a file path, got {shown(path)}", field=field)
    where = {"field": field}
    try:
        info = os.stat(path)
    except ValueError:
        raise InputError("the file name holds a NUL byte", **where) from None
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise InputError(f"cannot write {shown(os.fspath(path))}: {exc.strerror or exc}", **where) from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise InputError(f"{path} is a directory; expected a file", **where)
    parent = Path(path).parent
    if not parent.is_dir():
        raise InputError(f"directory {parent} does not exist", **where)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write in {parent}: permission denied", **where)
    return Path(path)


def count_lines(path, field: str) -> int:
    """Lines of the regular file ``path`` (a last line without a newline counts), read in blocks
    without holding the file."""
    lines, last = 0, b"\n"
    try:
        with open(check_regular_file(path, field), "rb") as fh:
            while block := fh.read(1 << 20):
                lines += block.count(b"\n")
                last = block[-1:]
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", **_where(path, field)) from None
    return lines + (last != b"\n")
