"""Arguments → one table of arrays (one row per configuration).

Every ``estimate`` argument may be a scalar or a list; lists are axes of a cartesian product.
Names (model, hardware, runtime, dtype, …) are resolved once per distinct value and gathered
into numeric columns, so a million-row sweep costs one pass of array arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from perfsim.errors import InputError, check_positive, unknown
from perfsim.plan.arguments import ARGUMENTS, check_value
from perfsim.specs.hardware import WHATIF_KEYS, load_hardware


def _key(value):
    """Hashable identity of an argument value (dicts become sorted tuples)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _key(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_key(v) for v in value)
    return value


#: entries a one-value gather reads as a number directly (None: NaN)
NUMBERS = (float, int, bool, type(None), np.float64)

#: the codes of an argument with one value (every row takes it); shared, so never written
_ONE_VALUE = np.zeros(1, np.int64)
_ONE_VALUE.flags.writeable = False


@dataclass
class Axis:
    """One swept argument: its distinct ``values`` and each row's index into them (``codes``)."""

    name: str
    values: list
    codes: np.ndarray


#: the axis of each argument left at its default, shared by every grid (read, never written): one
#: configuration's grid holds some forty of them
DEFAULT_AXES = {name: Axis(name, [default], _ONE_VALUE) for name, (_, default) in ARGUMENTS.items()}


@dataclass
class Grid:
    """The cartesian product of the arguments' values: ``n`` rows, one :class:`Axis` per argument."""

    n: int
    axes: dict
    shape: tuple | None = None  # a box of the design space (:meth:`Space.boxes`): codes broadcast to it

    @property
    def block_shape(self) -> tuple:
        """Shape the columns broadcast to: ``(n,)`` for rows, the box's for a box."""
        return (self.n,) if self.shape is None else self.shape

    def values(self, name):
        """Distinct values of argument ``name`` (``[default]`` when it was not given)."""
        return self.axes[name].values

    def codes(self, name):
        return self.axes[name].codes

    def gather(self, name, table):
        """Per-row array from ``table`` (one entry per distinct value of ``name``)."""
        axis = self.axes[name]
        if len(axis.values) == 1 and type(table[0]) in NUMBERS:
            return np.float64(table[0])  # what the array's one entry would be, without the array
        table = np.asarray(table, dtype=float)
        return table[0] if len(axis.values) == 1 else table[axis.codes]


def _with_defaults(axes: dict) -> dict:
    """``axes`` followed by the default axis of every argument it does not give, in argument order."""
    axes.update((name, axis) for name, axis in DEFAULT_AXES.items() if name not in axes)
    return axes


_BOX_SLACK = 4  # a box may exceed the row budget this many times to keep the structural axes whole
#: arguments whose values switch parts of the model on or off (NPU engines, PIM, MoE, offloading,
#: fp8 casts, default engines, what is reported): boxes never split them
_STRUCTURAL = {"model", "hardware", "mode", "dtype", "place", "pim_mode", "sub_batches", "train_tokens", "power_cap_w",
               "offload_weights", "offload_optimizer", "offload_grads", "offload_activations", "offload_kv",
               "offload_experts"}


def _structural(name: str) -> bool:
    return name in _STRUCTURAL


_RUN_ROWS = 16  # rows of a code's run from which runs are repeated rather than a pattern tiled
_DIVIDED_ROWS = 1024  # rows of a block under which its codes are divided row by row


def axis_codes(start: int, stop: int, stride: int, length: int) -> np.ndarray:
    """The code of an axis of ``length`` values and ``stride`` rows per value on each row of
    ``[start, stop)``: ``(np.arange(start, stop) // stride) % length``, laid out from its runs (each
    code repeated) or its period (one cycle of codes tiled) rather than divided row by row (two
    integer divisions a row cost more than the rest of a block's layout)."""
    n = stop - start
    if n < _DIVIDED_ROWS:  # (few rows: two divisions cost less than laying out runs or a cycle)
        return (np.arange(start, stop, dtype=np.int64) // stride) % length
    if stride >= _RUN_ROWS:
        first = start // stride
        runs = (stop - 1) // stride - first + 1
        lengths = np.full(runs, stride, dtype=np.int64)
        lengths[0] -= start - first * stride
        lengths[-1] -= (first + runs) * stride - stop
        return (np.arange(first, first + runs, dtype=np.int64) % length).repeat(lengths)
    period = stride * length
    if period > 4 * n:  # a cycle far longer than the rows: divided row by row
        return (np.arange(start, stop, dtype=np.int64) // stride) % length
    offset = start % period
    cycles = -(-(offset + n) // period)
    return np.tile(np.arange(length, dtype=np.int64).repeat(stride), cycles)[offset:offset + n]


@dataclass
class Space:
    """A cartesian product not yet laid out in rows: each argument's distinct values and stride.

    :meth:`block` gives the :class:`Grid` of rows ``[start, stop)``, so a sweep of any size is
    evaluated block by block without ever holding every row's codes.
    """

    n: int
    lists: list  # (name, values, stride) in axis order; the last axis varies fastest

    def block(self, start: int = 0, stop: int | None = None) -> Grid:
        """The rows ``[start, stop)`` as a grid (every distinct value kept, codes sliced)."""
        stop = self.n if stop is None else min(stop, self.n)
        axes = {}
        for name, values, stride in self.lists:
            codes = axis_codes(start, stop, stride, len(values)) if len(values) > 1 else _ONE_VALUE
            axes[name] = Axis(name, values, codes)
        return Grid(n=stop - start, axes=_with_defaults(axes))

    def boxes(self, start: int, stop: int, max_rows: int):
        """Cover rows ``[start, stop)`` with boxes of at most ``max_rows`` rows; yields ``(first_row, grid)``.

        A box fixes the leading axes, takes a range of one axis and all values of the axes after
        it, so its rows are contiguous. Its codes broadcast along their own dimension of the box
        (``grid.shape``), so every column computed from arguments of some axes only has the size
        of those axes: work that does not depend on an axis is not repeated along it. Elementwise
        results are the same as on rows, value for value.
        """
        lens, tail, first_structural, whole, limit = self._layout(max_rows)
        p = start
        while p < stop:
            room = min(limit, stop - p)
            j = len(lens)
            while j > 0 and p % tail[j - 1] == 0 and tail[j - 1] <= room:
                j -= 1
            if j > first_structural:  # no box here keeps those axes whole: rows, as a plain block
                q = min(stop, p + max_rows, (p // whole + 1) * whole)
                yield p, self.block(p, q)
                p = q
                continue
            if j == 0:  # the whole space is one box
                s, first, r = None, 0, 1
            else:
                s = j - 1
                first = (p // tail[j]) % lens[s]
                r = min(lens[s] - first, room // tail[j])
            dims = [r if d == s else lens[d] for d in range(len(lens)) if s is not None and d >= s]
            if s is None:
                dims = list(lens)
            shape = tuple(dims) or (1,)
            offset = len(lens) - len(dims)  # axes before the box's are fixed
            axes = {}
            for d, (name, values, stride) in enumerate(self.lists):
                if len(values) == 1:
                    codes = _ONE_VALUE
                elif d < offset:
                    codes = np.asarray((p // stride) % len(values), dtype=np.int64)
                else:
                    k = d - offset
                    index = np.arange(first, first + r) if d == s else np.arange(len(values))
                    codes = index.reshape([len(index) if i == k else 1 for i in range(len(shape))]).astype(np.int64)
                axes[name] = Axis(name, values, codes)
            axes = _with_defaults(axes)
            n = int(np.prod(shape))
            yield p, Grid(n=n, axes=axes, shape=shape)
            p += n

    def _layout(self, max_rows: int):
        """``(lens, tail, first_structural, whole, limit)`` of :meth:`boxes`."""
        lens = [len(v) for _, v, _ in self.lists]
        tail = [1] * (len(lens) + 1)  # tail[j]: rows of the axes j.. (the stride of axis j - 1)
        for j in range(len(lens) - 1, -1, -1):
            tail[j] = tail[j + 1] * lens[j]
        # a box keeps every value of the axes that decide which parts of the model run (and which
        # result keys exist): the first such axis with several values and all after it stay whole
        first_structural = next((d for d, (name, values, _) in enumerate(self.lists)
                                 if len(values) > 1 and _structural(name)), len(lens))
        whole = tail[first_structural]
        limit = max(max_rows, whole) if whole <= _BOX_SLACK * max_rows else max_rows
        return lens, tail, first_structural, whole, limit

    def box_rows(self, max_rows: int) -> int:
        """Rows of the largest box :meth:`boxes` lays out at ``max_rows`` (a range of one axis, all of
        those after it): rows ``[start, stop)`` whose ends are multiples of it are covered by such
        boxes, not cut into small ones where a box would cross ``stop``."""
        lens, tail, first_structural, _, limit = self._layout(max_rows)
        j = next(j for j in range(len(tail)) if tail[j] <= limit)
        if j > first_structural:  # no box keeps the structural axes whole: plain blocks of rows
            return max_rows
        return tail[j] * min(lens[j - 1], limit // tail[j]) if j > 0 else tail[0]

    def given(self):
        """Names of the arguments given (``hardware.KEY`` for what-if keys), in axis order."""
        return [name for name, _, _ in self.lists]


def default_dtype(hardware: list) -> str:
    """bf16, or the devices' own 16-bit type where none of them has a bf16 tensor rate (an NPU or
    PIM spec with fp16 only)."""
    peaks = [load_hardware(h).peak_tflops for h in hardware]
    if any("bf16" in p for p in peaks) or not all("fp16" in p for p in peaks):
        return ARGUMENTS["dtype"][1]
    return "fp16"


def _argument(value, name):
    return check_value(name, value)


def _no_null(values: list, field: str, default) -> list:
    """``values``, unless one is None where None is not the default (``default``): ``tp: [1, null]``."""
    if default is not None and any(v is None for v in values):
        raise InputError(f"null in a list of values: write {default} instead", field=field)
    return values


def space(args: dict, max_rows: int | None = None, rows_field: str = "max_rows") -> Space:
    """The cartesian product of list-valued arguments (hardware what-if lists included), unexpanded.

    Values are checked once per distinct value; arguments not given, or given as None, get their
    default (a what-if key given as None keeps the spec's number). Inside a list None is the
    default only where the default is None (``power_cap_w: [null, 300]``), else it is refused.
    The rows are counted before any value is checked: more than ``max_rows`` is refused
    (:func:`check_rows`, naming the option ``rows_field`` that raises the limit).
    """
    for name in args:
        if name not in ARGUMENTS:
            raise unknown("argument", name, ARGUMENTS)
    for name in ("model", "hardware"):
        if args.get(name) is None:
            raise InputError("is required", field=name)
    axes: list[tuple[str, list, object]] = []  # (name, values as given, the check of one value)
    for name, value in args.items():
        if name == "hardware" and isinstance(value, dict):
            base = value.get("base")
            if base is None:
                raise InputError("a what-if hardware dict needs `base: NAME`", field="hardware")
            axes.append(("hardware", _no_null(base, "hardware", "a hardware name") if isinstance(base, list)
                         else [base], None))
            for key, sub in value.items():
                if key == "base" or sub is None:
                    continue
                if key not in WHATIF_KEYS:
                    raise unknown("what-if hardware key", key, list(WHATIF_KEYS), field=f"hardware.{key}")
                subs = _no_null(sub, f"hardware.{key}", "the spec's number") if isinstance(sub, list) else [sub]
                axes.append((f"hardware.{key}", subs, check_positive))
            continue
        if value is None:
            continue
        default = ARGUMENTS[name][1]
        values = _no_null(value, name, None if default is None else repr(default)) if isinstance(value, list) else [value]
        if ARGUMENTS[name][0] == "layers" and isinstance(value, (list, tuple)) \
                and not any(isinstance(v, (list, tuple)) for v in value):
            values = [value]  # one split (a list of counts); a list of splits is an axis
        if name == "place" and isinstance(value, dict):
            values = [value]
        axes.append((name, values, _argument))
    for name, values, _ in axes:
        if not values:
            raise InputError("an empty list gives no configurations", field=name)
    if args.get("dtype") is None:  # the default compute type follows the devices (fp16-only NPUs)
        axes.append(("dtype", [default_dtype(next(v for k, v, _ in axes if k == "hardware"))], None))
    n = math.prod(len(v) for _, v, _ in axes)
    if max_rows is not None:
        check_rows(n, max_rows, rows_field)
    out = []
    stride = n
    for name, values, check in axes:
        stride //= len(values)
        out.append((name, values if check is None else [check(v, name) for v in values], max(stride, 1)))
    return Space(n=n, lists=out)


#: rows a sweep may have unless told otherwise (``max_rows``, ``--max-rows``)
MAX_ROWS = 50_000_000
RESULT_BYTES_PER_ROW = 1000  # about the bytes of one result row in memory (~100 columns)


def check_rows(n: int, max_rows: int, field: str = "max_rows") -> int:
    """Refuse a sweep of more than ``max_rows`` rows, saying how to raise the limit (``field``)."""
    if n > max_rows:
        give = f"{field} {n}" if field.startswith("--") else f"{field}={n}"
        raise InputError(f"the sweep has {n:,} rows (about {byte_size(n * RESULT_BYTES_PER_ROW)} of results), more than "
                         f"the limit of {max_rows:,}; pass {give} to run it", field=field)
    return n


def byte_size(nbytes: float) -> str:
    """``nbytes`` in the largest decimal unit below it: ``860 TB``."""
    units = ("B", "kB", "MB", "GB", "TB", "PB")
    i = 0
    while nbytes >= 1000 and i < len(units) - 1:
        nbytes /= 1000
        i += 1
    return f"{nbytes:,.0f} {units[i]}"


def expand(args: dict) -> Grid:
    """Cartesian product of list-valued arguments (hardware what-if lists included), as one grid.

    Values are checked once per distinct value; arguments not given get their default.
    """
    return space(args).block()
