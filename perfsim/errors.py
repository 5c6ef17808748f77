"""Errors perfsim raises on bad input.

A plan that cannot run is *not* an error (it is a row with ``feasible=False``); an error is input
that makes no sense: an unknown name, a malformed file, a negative size.
"""

from __future__ import annotations

import difflib
import math
import reprlib
from collections.abc import Iterable
from numbers import Integral, Real

_LIST_UP_TO = 12  # a short list of accepted values is spelled out when nothing is close
_MATCH_UP_TO = 200  # a longer value is close to no name
_FILE_UP_TO = 200  # a longer file name is cut in the middle in a message
_MESSAGE_UP_TO = 600  # a longer message is cut in the middle
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlevel = 3


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
        if len(message) > _MESSAGE_UP_TO:  # a value written out in full: its ends say enough
            message = f"{message[:_MESSAGE_UP_TO // 2]} ... {message[-_MESSAGE_UP_TO // 4:]}"
        self.message = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.file:
            file = self.file if len(self.file) <= _FILE_UP_TO else f"{self.file[:60]}...{self.file[-60:]}"
            file = file if file.isprintable() else ascii(file)
            where = f"{file}:{self.line}: " if self.line else f"{file}: "
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


def shown(value) -> str:
    """``repr(value)`` for a message, cut short: a long string, a deep list or a huge integer
    stays one readable line."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    try:
        return _SHORT.repr(value)
    except Exception:  # a value whose repr fails is still named by its type
        return f"a {type(value).__name__}"


def close_matches(value, choices: Iterable[str] | None, n: int = 3) -> list[str]:
    """The up-to-``n`` entries of ``choices`` closest to ``value`` (difflib ratio)."""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool) or choices is None:
        return []
    text = shown(value) if not isinstance(value, str) else value
    if len(text) > _MATCH_UP_TO:
        return []
    return difflib.get_close_matches(text, [str(c) for c in choices], n=n, cutoff=0.5)


def unknown(kind: str, value, choices, **where) -> InputError:
    """An :class:`InputError` for an unknown name of ``kind``."""
    return InputError(f"unknown {kind} {shown(value)}", value=value, choices=sorted(choices), **where)


#: the largest whole number an argument or spec may hold: integers up to 2**53 are exact in the
#: float64 columns every number becomes
MAX_WHOLE = 2**53


def finite(value) -> float | None:
    """``value`` as a float when it is a real number (not a bool) with a finite float value, else None
    (NaN, infinities, integers too large for a float, strings and other types)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    try:
        number = float(value)
    except (OverflowError, TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def check_whole(value, field: str, minimum: int = 1, **where) -> int:
    """``value`` as an int: a finite whole number (``3`` or ``3.0``, not ``True``) of at least ``minimum``
    and at most :data:`MAX_WHOLE`; ``where`` (``file=``, ``line=``) locates it in a file."""
    exact = isinstance(value, Integral) and not isinstance(value, bool)
    number = finite(value)
    if not exact and (number is None or number != int(number)):
        raise InputError(f"expected a whole number, got {shown(value)}", field=field, **where)
    if value < minimum:
        raise InputError(f"must be at least {minimum}, got {shown(value)}", field=field, **where)
    if value > MAX_WHOLE:
        raise InputError(f"must be at most 2**53 ({MAX_WHOLE:,}), got {shown(value)}", field=field, **where)
    return int(value)


def check_positive(value, field: str, **where) -> float:
    """``value`` as a float: a finite number above 0 (not ``True``)."""
    number = finite(value)
    if number is None or not number > 0:
        raise InputError(f"expected a positive number, got {shown(value)}", field=field, **where)
    return number
