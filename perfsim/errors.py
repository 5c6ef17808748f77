"""Errors perfsim raises on bad input.

A plan that cannot run is *not* an error (it is a row with ``feasible=False``); an error is input
that makes no sense: an unknown name, a malformed file, a negative size.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from numbers import Real

_LIST_UP_TO = 12  # a short list of accepted values is spelled out when nothing is close


class InputError(ValueError):
    """Bad user input. Names the field, and the file and line when it came from a file.

    Parameters
    ----------
    message : str
        What is wrong, in one line.
    field : str, optional
        The argument or key at fault (``"hardware"``, ``"device.memory.hbm.bandwidth_gb_s"``).
    file, line : str, int, optional
        Where the bad value was written.
    choices : iterable of str, optional
        Accepted values; the three closest to ``value`` are suggested.
    value : object, optional
        The value that was rejected.
    """

    def __init__(self, message, *, field=None, file=None, line=None, choices=None, value=None):
        self.field = field
        self.file = str(file) if file is not None else None
        self.line = line
        self.value = value
        self.suggestions = close_matches(value, choices) if choices is not None else []
        choices = [str(c) for c in choices] if choices is not None else []
        if choices and not self.suggestions and len(choices) <= _LIST_UP_TO:
            message = f"{message}; expected one of: " + ", ".join(choices)
        self.message = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        head = f"{where}{self.field}: " if self.field else where
        text = head + self.message
        if self.suggestions:
            text += " (did you mean " + ", ".join(repr(s) for s in self.suggestions) + "?)"
        return text

    def __reduce__(self):
        return (_rebuild, (self.message, self.field, self.file, self.line, self.value, self.suggestions))


def _rebuild(message, field, file, line, value, suggestions):
    error = InputError(message, field=field, file=file, line=line, value=value)
    error.suggestions = suggestions
    error.args = (error._render(),)
    return error


def close_matches(value, choices: Iterable[str] | None, n: int = 3) -> list[str]:
    """The up-to-``n`` entries of ``choices`` closest to ``value`` (difflib ratio)."""
    if value is None or choices is None:
        return []
    return difflib.get_close_matches(str(value), [str(c) for c in choices], n=n, cutoff=0.5)


def unknown(kind: str, value, choices, **where) -> InputError:
    """An :class:`InputError` for an unknown name of ``kind``."""
    return InputError(f"unknown {kind} {value!r}", value=value, choices=sorted(choices), **where)


def check_whole(value, field: str, minimum: int = 1) -> int:
    """``value`` as an int: a finite whole number (``3`` or ``3.0``, not ``True``) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)) \
            or float(value) != int(value):
        raise InputError(f"expected a whole number, got {value!r}", field=field)
    if value < minimum:
        raise InputError(f"must be at least {minimum}, got {value!r}", field=field)
    return int(value)


def check_positive(value, field: str) -> float:
    """``value`` as a float: a finite number above 0 (not ``True``)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < float(value) < math.inf:
        raise InputError(f"expected a positive number, got {value!r}", field=field)
    return float(value)
