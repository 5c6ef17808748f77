"""The request set of a serving run: arrival times and prompt / generated lengths.

Arrivals are Poisson (exponential gaps at ``arrival_rate``), read from a trace CSV
(``arrival_s,prompt_len,gen_len``), or all at time 0 (an offline run). Lengths are fixed, drawn
from a distribution, or resampled from a CSV of measured lengths. Every random draw comes from
its own stream of ``numpy.random.SeedSequence(seed)``, so changing the arrival rate keeps the
lengths, and two schedulers compared at one seed see the same requests.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass

import numpy as np

from perfsim.errors import InputError, unknown

DISTRIBUTIONS = {
    "fixed": ("value",),
    "lognormal": ("mean", "sigma"),
    "normal": ("mean", "sigma"),
    "uniform": ("min", "max"),
}
_OPTIONAL = ("min", "max")


@dataclass(frozen=True)
class Requests:
    """``n`` requests sorted by arrival: ``arrival_s`` (s), ``prompt_len`` and ``gen_len`` (tokens)."""

    arrival_s: np.ndarray
    prompt_len: np.ndarray
    gen_len: np.ndarray

    @property
    def n(self) -> int:
        return len(self.arrival_s)


def _number(value, field, *, positive=False, whole=False, minimum=None):
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    if ok:
        value = float(value)
        ok = math.isfinite(value)
    if not ok:
        raise InputError(f"expected a number, got {value!r}", field=field)
    if whole and value != int(value):
        raise InputError(f"expected a whole number, got {value!r}", field=field)
    if positive and value <= 0:
        raise InputError(f"must be positive, got {value!r}", field=field)
    if minimum is not None and value < minimum:
        raise InputError(f"must be at least {minimum}, got {value!r}", field=field)
    return value


def check_lengths(spec, field):
    """Validate a length argument: a whole number >= 1, a distribution dict or a CSV path.

    Returns a normalised form: ``("fixed", n)``, ``("dist", dict)`` or ``("csv", values)``.
    """
    if isinstance(spec, (str, os.PathLike)):
        return ("csv", _read_lengths(os.fspath(spec), field))
    if isinstance(spec, dict):
        return ("dist", _check_distribution(spec, field))
    return ("fixed", int(_number(spec, field, whole=True, minimum=1)))


def _check_distribution(spec, field):
    dist = spec.get("dist")
    if dist is None:
        raise InputError("a length distribution needs `dist` (" + ", ".join(DISTRIBUTIONS) + ")", field=field)
    if dist not in DISTRIBUTIONS:
        raise unknown("length distribution", dist, DISTRIBUTIONS, field=f"{field}.dist")
    needed = DISTRIBUTIONS[dist]
    allowed = {"dist", *needed, *_OPTIONAL}
    if dist == "fixed":
        allowed.add("mean")
    for key in spec:
        if key not in allowed:
            raise unknown(f"key of a {dist} distribution", key, sorted(allowed), field=f"{field}.{key}")
    out = {"dist": dist}
    for key in spec:
        if key == "dist":
            continue
        out[key] = _number(spec[key], f"{field}.{key}", minimum=0.0)
    if dist == "fixed" and "value" not in out and "mean" in out:
        out["value"] = out.pop("mean")
    for key in needed:
        if key not in out:
            raise InputError(f"a {dist} distribution needs `{key}`", field=field)
    if dist in ("lognormal", "normal") and out["mean"] <= 0:
        raise InputError(f"must be positive, got {out['mean']!r}", field=f"{field}.mean")
    if dist == "fixed":
        _number(out["value"], f"{field}.value", whole=True, minimum=1)
    lo, hi = out.get("min", 1.0), out.get("max", math.inf)
    if dist == "uniform":
        lo, hi = out["min"], out["max"]
    if hi < max(lo, 1.0):
        raise InputError(f"max ({hi:g}) is below min ({max(lo, 1.0):g})", field=field)
    return out


def _read_rows(path, field):
    """Non-empty CSV rows of ``path`` with their line numbers; the header (if any) is returned apart."""
    try:
        with open(path, newline="") as fh:
            rows = [(i + 1, [cell.strip() for cell in row]) for i, row in enumerate(csv.reader(fh))]
    except FileNotFoundError:
        raise InputError("file not found", field=field, file=path) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read: {exc}", field=field, file=path) from None
    rows = [(line, row) for line, row in rows if any(row) and not row[0].startswith("#")]
    header = None
    if rows:
        try:
            float(rows[0][1][0])
        except ValueError:
            header = rows[0]
            rows = rows[1:]
    if not rows:
        raise InputError("no data rows", field=field, file=path)
    return header, rows


def _cell_length(cell, field, path, line):
    try:
        value = float(cell)
    except ValueError:
        raise InputError(f"expected a token count, got {cell!r}", field=field, file=path, line=line) from None
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise InputError(f"expected a whole number of tokens >= 1, got {cell!r}", field=field, file=path, line=line)
    return int(value)


def _read_lengths(path, field):
    """Lengths from a CSV: one column, or the column named ``field`` under a header."""
    header, rows = _read_rows(path, field)
    column = 0
    if header is not None:
        names = header[1]
        if field in names:
            column = names.index(field)
        elif len(names) != 1:
            raise unknown("column", field, names, field=field, file=path, line=header[0])
    values = []
    for line, row in rows:
        if column >= len(row) or row[column] == "":
            raise InputError(f"missing the {field} column", field=field, file=path, line=line)
        values.append(_cell_length(row[column], field, path, line))
    return np.asarray(values, dtype=np.int64)


TRACE_COLUMNS = ("arrival_s", "prompt_len", "gen_len")


def read_trace(path):
    """A request trace CSV (``arrival_s,prompt_len,gen_len``, header optional), sorted by arrival."""
    path = os.fspath(path)
    header, rows = _read_rows(path, "trace")
    columns = [0, 1, 2]
    if header is not None:
        names = header[1]
        for name in TRACE_COLUMNS:
            if name not in names:
                raise InputError(f"the header has no {name!r} column (expected {', '.join(TRACE_COLUMNS)})",
                                 field="trace", file=path, line=header[0])
        columns = [names.index(name) for name in TRACE_COLUMNS]
    arrival, prompt, gen = [], [], []
    for line, row in rows:
        if len(row) <= max(columns):
            raise InputError(f"expected {len(TRACE_COLUMNS)} columns ({', '.join(TRACE_COLUMNS)}), got {len(row)}",
                             field="trace", file=path, line=line)
        cell = row[columns[0]]
        try:
            t = float(cell)
        except ValueError:
            raise InputError(f"expected an arrival time in seconds, got {cell!r}", field="trace", file=path,
                             line=line) from None
        if not math.isfinite(t) or t < 0:
            raise InputError(f"arrival_s must be a finite time >= 0, got {cell!r}", field="trace", file=path, line=line)
        arrival.append(t)
        prompt.append(_cell_length(row[columns[1]], "prompt_len", path, line))
        gen.append(_cell_length(row[columns[2]], "gen_len", path, line))
    order = np.argsort(np.asarray(arrival), kind="stable")
    return Requests(np.asarray(arrival, dtype=float)[order], np.asarray(prompt, dtype=np.int64)[order],
                    np.asarray(gen, dtype=np.int64)[order])


def draw_lengths(spec, n, rng):
    """``n`` whole lengths >= 1 from a normalised spec (:func:`check_lengths`)."""
    kind, value = spec
    if kind == "fixed":
        return np.full(n, value, dtype=np.int64)
    if kind == "csv":
        return value[rng.integers(0, len(value), size=n)]
    dist = value["dist"]
    if dist == "fixed":
        x = np.full(n, value["value"])
    elif dist == "lognormal":
        sigma = value["sigma"]
        x = rng.lognormal(math.log(value["mean"]) - 0.5 * sigma * sigma, sigma, size=n)
    elif dist == "normal":
        x = rng.normal(value["mean"], value["sigma"], size=n)
    else:
        x = rng.uniform(value["min"], value["max"] + 1.0, size=n)
        x = np.floor(x)
    lo = max(value.get("min", 1.0), 1.0)
    hi = value.get("max", math.inf)
    return np.clip(np.rint(x), math.ceil(lo), math.floor(hi) if math.isfinite(hi) else None).astype(np.int64)


def make_requests(*, num_requests, prompt_len, gen_len, arrival_rate=None, trace=None, seed=0) -> Requests:
    """The request set of a run (arguments already checked, lengths normalised by :func:`check_lengths`)."""
    if trace is not None:
        requests = read_trace(trace)
        if num_requests is not None:
            if num_requests > requests.n:
                raise InputError(f"asks for {num_requests} requests but the trace has {requests.n} rows",
                                 field="num_requests", file=os.fspath(trace))
            requests = Requests(requests.arrival_s[:num_requests], requests.prompt_len[:num_requests],
                                requests.gen_len[:num_requests])
        return requests
    arrivals_seq, prompt_seq, gen_seq = np.random.SeedSequence(seed).spawn(3)
    n = num_requests
    if arrival_rate is None:
        arrival = np.zeros(n)
    else:
        arrival = np.cumsum(np.random.default_rng(arrivals_seq).exponential(1.0 / arrival_rate, size=n))
    prompt = draw_lengths(prompt_len, n, np.random.default_rng(prompt_seq))
    gen = draw_lengths(gen_len, n, np.random.default_rng(gen_seq))
    return Requests(arrival, prompt, gen)
