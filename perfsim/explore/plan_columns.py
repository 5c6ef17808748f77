"""The resolved plan of every sweep row: ``plan.NAME`` columns, one per argument.

A sweep row is an estimate flattened, so it carries the estimate's ``plan`` (every argument as
resolved: defaults filled in, ``auto`` choices made, the engine that ran, the layers of each
pipeline stage) as ``plan.NAME`` columns, the values :func:`perfsim.api.resolved_plan` gives one
estimate. Numbers stay numbers (whole numbers integer; nullable ``Int64`` where some rows have
none), labels are categoricals. A column's type and categories depend on the sweep's values only,
not on the rows of a chunk, so every chunk of a sweep has the same schema. An argument of one mode
is left out of a sweep of the other mode only (as the estimate leaves it out); in a sweep of both
modes it is missing on the other mode's rows. A what-if hardware's keys are the ``hardware.KEY``
input columns; ``plan.hardware`` names its base.
"""

from __future__ import annotations

import functools
import inspect

import numpy as np
import pandas as pd

from perfsim.graph.params import balanced_split
from perfsim.plan.arguments import ARGUMENTS, MODE_ONLY, Recompute
from perfsim.plan.columns import DEFAULT_RUNTIME, ENGINE_DEFAULTS, engine_name
from perfsim.plan.grid import Grid
from perfsim.plan.offload import ARGUMENT_COLUMNS, AUTO_ARGUMENTS, is_auto, spelled

#: arguments whose resolved value the evaluation reports as an output (``plan.KEY`` or the bare name)
_COUNTED = {"num_devices": "num_devices", "dp": "dp", "zero": "plan.zero", "global_batch": "plan.global_batch"}
_NUMBER_KINDS = ("pos", "frac", "share", "pue")

try:  # pandas's text dtype (missing values as NaN), whatever the rows hold; plain objects before pandas 2.3
    TEXT = pd.StringDtype(na_value=np.nan)
except TypeError:  # pragma: no cover - older pandas
    TEXT = object


#: whether pandas can be told that codes are valid (pandas 2.1+): checking them takes two passes over
#: the rows and most of the time of making a categorical of a chunk (~6 of 7 us for 1,000 rows)
_TRUSTED = {"validate": False} if "validate" in inspect.signature(pd.Categorical.from_codes).parameters else {}


def categorical(codes: np.ndarray, categories: list) -> pd.Categorical:
    """``pd.Categorical.from_codes(codes, categories=categories)``, its dtype made once per list of
    categories (a sweep makes the same few in every chunk; making one checks the categories again).
    ``codes`` is an integer array of positions in ``categories`` or -1 (none), as every caller makes
    it from the categories themselves; pandas is not asked to check it again."""
    try:
        dtype = _dtype(tuple((type(c), c) for c in categories))
    except TypeError:  # a category that cannot be a key
        return pd.Categorical.from_codes(codes, categories=categories)
    return pd.Categorical.from_codes(codes, dtype=dtype, **_TRUSTED)


def text_array(texts) -> pd.api.extensions.ExtensionArray:
    """``pd.array(texts, dtype=TEXT)`` of a pyarrow array of ``large_string`` (as pandas keeps texts):
    the array taken as it is where pandas' text array can be made from it directly (pandas' own
    conversion first casts it to the type it already has, ~18 us a column)."""
    try:
        made = TEXT.construct_array_type()(texts, dtype=TEXT)
        if made.dtype == TEXT and made._pa_array.type == texts.type:
            return made
    except (AttributeError, TypeError, ValueError):  # pragma: no cover - an older pandas
        pass
    return pd.array(texts, dtype=TEXT)


@functools.lru_cache(maxsize=1024)
def _dtype(categories: tuple) -> pd.CategoricalDtype:
    return pd.CategoricalDtype([c for _, c in categories])


def _label(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        value = list(value)
    return str(value)


def _spread(table, codes, n: int) -> np.ndarray:
    """Each row's entry of ``table``: ``table[codes]``, or its one entry on every row (``codes`` None)."""
    table = np.asarray(table)
    return table[:1].repeat(n) if codes is None else table[codes]  # (repeat: np.full's value, ~2 us sooner)


def _categorical(labels: list, codes, n: int, missing: np.ndarray | None = None) -> pd.Categorical:
    """A categorical of the rows' ``labels[codes]`` (a None label, or a row in ``missing``: none)
    whose categories are the labels in their order, without laying out a text per row."""
    table, dtype = _label_codes(tuple(labels))
    rows = _spread(table, codes, n)  # (each row's code: a new array)
    if missing is not None and missing.any():
        rows[missing] = -1
    return pd.Categorical.from_codes(rows, dtype=dtype, **_TRUSTED)


@functools.lru_cache(maxsize=1024)
def _label_codes(labels: tuple) -> tuple[np.ndarray, pd.CategoricalDtype]:
    """The code of each of ``labels`` (texts or None) among the distinct texts in their order (None: -1),
    read-only, and the categorical dtype of those texts: made once per list of labels (a sweep's chunks
    and calls give the same few)."""
    categories = list(dict.fromkeys(x for x in labels if x is not None))
    small = np.int8 if len(categories) < 127 else np.int64
    table = np.asarray([-1 if x is None else categories.index(x) for x in labels], dtype=small)
    table.flags.writeable = False
    return table, _dtype(tuple((str, c) for c in categories))


def _same_everywhere(values: np.ndarray) -> bool:
    """Whether every row of ``values`` (1-d, of two rows or more) holds its first value (a NaN never
    does): its ends and middle read first (most columns that differ do there), then its least and
    greatest compared, without an array made."""
    first = values[0]
    if not (values[-1] == first and values[len(values) // 2] == first):
        return False
    return bool(values.min() == values.max())


def _combinations(*keys, nan: float = 0.0):
    """The distinct combinations of the whole-number arrays ``keys`` (one column each, in rows; a
    float's NaN read as ``nan``; None: 0 on every row) and each row's index into them, sorted; one
    pass over the rows, not a sort of tuples. Keys of one value on every row (most chunks' engines
    and pipeline splits) are read at their first row only."""
    n = next(np.size(k) for k in keys if k is not None)

    def whole(k):  # (the rows of a key as int64: a float's NaN read as ``nan``)
        k = np.asarray(k)
        return np.asarray(np.nan_to_num(k, nan=nan) if k.dtype.kind == "f" else k, dtype=np.int64)

    def first(k):  # (a key's whole number at its first row: a finite float's truncation, as int64's)
        if k is None or not np.size(k):
            return 0
        rows = np.ravel(k)
        if rows.dtype.kind == "f" and not abs(rows[0]) < 2.0 ** 63:  # (NaN, infinities: as laid out)
            return int(whole(rows[:1])[0])
        return int(rows[0])

    if all(k is None or np.size(k) <= 1 or _same_everywhere(np.ravel(k)) for k in keys):
        return np.asarray([[first(k)] for k in keys]), np.zeros(n, np.int64)
    keys = [np.zeros(n, np.int64) if k is None else whole(k) for k in keys]
    lows = [int(k.min()) for k in keys]
    spans = [int(k.max()) - low + 1 for k, low in zip(keys, lows, strict=True)]
    flat = np.zeros(keys[0].size, np.int64)
    for k, low, span in zip(keys, lows, spans, strict=True):
        flat = flat * span + (k - low)
    total = int(np.prod(spans, dtype=np.float64))
    if total <= max(flat.size, 1 << 16):  # few possible combinations: which occur, without a sort
        present = np.zeros(total, dtype=bool)
        present[flat] = True
        uniques = np.flatnonzero(present)
        inverse = (np.cumsum(present) - 1)[flat]
    else:
        uniques, inverse = np.unique(flat, return_inverse=True)
    combos = []
    for span, low in zip(reversed(spans), reversed(lows), strict=True):
        combos.append(uniques % span + low)
        uniques = uniques // span
    return np.asarray(combos[::-1]), np.ravel(inverse)


def _codes(codes, n: int) -> np.ndarray:
    return np.zeros(n, np.int64) if codes is None else codes


def integers(values: np.ndarray, nullable: bool):
    """Whole numbers from floats (NaN: none) as int64, or as nullable Int64 when some row may have none.
    One number on every row (most chunks' devices, replicas, ZeRO stages) is made whole once."""
    if values.ndim == 1 and len(values) > 1 and _same_everywhere(values):
        whole = np.round(values[:1]).astype(np.int64).repeat(len(values))
        return pd.arrays.IntegerArray(whole, np.zeros(len(values), dtype=bool)) if nullable else whole
    missing = np.isnan(values)
    whole = np.round(np.where(missing, 0, values) if missing.any() else values).astype(np.int64)
    return pd.arrays.IntegerArray(whole, missing) if nullable else whole


#: the arguments that take whole numbers
_WHOLE = frozenset(name for name, (kind, _) in ARGUMENTS.items()
                   if kind == "int" or (isinstance(kind, tuple) and all(isinstance(k, int) for k in kind)))


def _whole(values: list):
    """An argument's distinct values made whole (:func:`integers`; None: none), kept per list of
    values (a sweep's chunks and calls give the same few)."""
    try:
        return _whole_kept(tuple(values))
    except TypeError:  # a value that cannot be a key
        return _whole_made(values)


@functools.lru_cache(maxsize=1024)
def _whole_kept(values: tuple):
    table = _whole_made(values)
    for array in (table,) if isinstance(table, np.ndarray) else (table._data, table._mask):
        array.flags.writeable = False  # (spread into each chunk's own arrays)
    return table


def _whole_made(values) -> np.ndarray | pd.arrays.IntegerArray:
    return integers(np.asarray([np.nan if v is None else float(v) for v in values]), None in values)


def plan_columns(grid: Grid, out: dict) -> dict:
    """``plan.NAME`` columns of the rows of ``grid`` (a row block) whose outputs are ``out``."""
    n = grid.n

    def per_row(name):  # the distinct values, and each row's index into them (None: one value for all)
        axis = grid.axes[name]
        return axis.values, (np.broadcast_to(axis.codes, (n,)) if len(axis.values) > 1 else None)

    def numbers(values, codes, other):
        column = _spread([np.nan if v is None else float(v) for v in values], codes, n)
        if other is not None:
            column[other] = np.nan
        return column

    modes, mode_codes = per_row("mode")
    train = _spread([m == "train" for m in modes], mode_codes, n)
    columns = {}
    for name, (kind, _) in ARGUMENTS.items():
        only = MODE_ONLY.get(name, (None,))[0]
        if only is not None and only not in modes:
            continue  # the argument of a mode this sweep does not run
        mixed = only is not None and len(modes) > 1
        other = (train if only == "inference" else ~train) if mixed else None
        values, codes = per_row(name)
        if name in _COUNTED:
            counts = np.asarray(out[_COUNTED[name]], dtype=float)
            if other is not None:
                counts = np.where(other, np.nan, counts)
            columns[name] = integers(counts, mixed)
        elif name == "micro_batch":
            counts = np.where(train, np.asarray(out["plan.micro_batch"], dtype=float), numbers(values, codes, None))
            columns[name] = integers(counts, "inference" in modes and None in values)
        elif name == "recompute":
            chosen = np.nan_to_num(np.asarray(out["plan.recompute"], dtype=float), nan=-1).astype(np.int64)
            labels = [m.label for m in Recompute if m is not Recompute.AUTO]
            columns[name] = _categorical([*labels, None], np.where(chosen < 0, len(labels), chosen), n, other)
        elif name == "runtime":
            columns[name] = _runtimes(values, codes, train, np.asarray(out["plan.default_engine"], dtype=float))
        elif name == "pp_layers":
            pp_values, pp_codes = per_row("pp")
            columns[name] = _layers(values, codes, (pp_values, pp_codes), np.asarray(out["plan.layers"], dtype=float))
        elif name in _WHOLE and other is None:
            # each distinct value made whole once, then spread over the rows
            table = _whole(values)
            columns[name] = _spread(table, codes, n) if isinstance(table, np.ndarray) else \
                pd.arrays.IntegerArray(_spread(table._data, codes, n), _spread(table._mask, codes, n))
        elif name in _WHOLE:
            columns[name] = integers(numbers(values, codes, other), mixed or None in values)
        elif kind in _NUMBER_KINDS:
            columns[name] = numbers(values, codes, other)
        elif kind == "bool" and f"plan.{name}" in out:  # a default the engine decides (sequence parallelism)
            columns[name] = np.asarray(out[f"plan.{name}"], dtype=float) > 0  # (NaN: not above 0)
        elif kind == "bool":
            columns[name] = _spread([bool(v) for v in values], codes, n)
        elif name in AUTO_ARGUMENTS and any(map(is_auto, values)):
            columns[name] = _placements(values, _codes(codes, n), out, ARGUMENT_COLUMNS[name], other)
        else:
            columns[name] = _categorical([_label(v) for v in values], codes, n, other)
    return {f"plan.{name}": value for name, value in columns.items()}


def _runtimes(values, codes, train, default_engine) -> pd.Categorical:
    """The engine of each row: the runtime given, or the default its ``default_engine`` code names."""
    combos, inverse = _combinations(codes, train, default_engine)
    names = [engine_name("train" if t else "inference", values[r], float(e)) for r, t, e in combos.T]
    possible = [engine_name("inference", v, 0.0) for v in values if v is not None]
    if None in values:  # every engine a default may name, so every chunk has the same categories
        possible += list(DEFAULT_RUNTIME.values()) + [e for e in ENGINE_DEFAULTS if e]
    categories = list(dict.fromkeys(possible))
    lookup = np.asarray([categories.index(x) for x in names], dtype=np.int64)
    return categorical(lookup[inverse], categories)


def _layers(values, codes, pp, layers) -> pd.api.extensions.ExtensionArray:
    """Layers of each pipeline stage as text (``[16, 16]``): the split given, else the balanced one."""
    pp_values, pp_codes = pp
    combos, inverse = _combinations(codes, pp_codes, layers, nan=-1)
    labels = []
    for v, p, count in combos.T:
        split = values[v]
        if split is None:
            stages = int(pp_values[p])
            split = balanced_split(int(count), stages) if 0 < stages <= count else None
        labels.append(_label(split))
    if len(labels) == 1 and TEXT is not object:  # one split on every row (one pp): repeated, not taken row by row
        import pyarrow as pa

        return text_array(pa.repeat(pa.scalar(labels[0], type=pa.large_string()), len(inverse)))
    return pd.array(np.asarray(labels, dtype=object), dtype=TEXT).take(inverse)


def _placements(values, codes, out, prefix: str, other) -> pd.api.extensions.ExtensionArray:
    """An offload argument of a sweep that searches placements (``auto``): the placement each row
    took, as text (the searched ones are known only once priced): ``gpu=0.3,cpu=0.7``, ``none``, ..."""
    shares = [np.asarray(out.get(f"plan.{prefix}_frac_{tier}", np.full(len(codes), np.nan)), dtype=float)
              for tier in ("cpu", "nvme")]
    keys = np.column_stack([codes.astype(float), *shares])
    uniques, inverse = np.unique(np.nan_to_num(keys, nan=-1.0), axis=0, return_inverse=True)
    labels = []
    for code, cpu, nvme in uniques:
        value = values[int(code)]
        if is_auto(value) and cpu >= 0 and nvme >= 0:
            value = spelled((max(1.0 - cpu - nvme, 0.0), cpu, nvme))
        labels.append(_label(value))
    rows = np.asarray(labels, dtype=object)[np.ravel(inverse)]
    if other is not None:
        rows[other] = None
    return pd.array(rows, dtype=TEXT)
