"""Sweep spec files: YAML of estimate arguments whose lists are axes; results to CSV or parquet.

The output is written to a temporary file beside the target and renamed into place, so an
interrupted run never leaves a half-written results file and never overwrites a good one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from perfsim.errors import InputError
from perfsim.specs.yamlio import load_yaml


def _expand_range(value, field):
    """``{range: [start, stop, step]}`` or ``{logrange: [start, stop, num]}`` → list."""
    if isinstance(value, dict) and set(value) == {"range"}:
        start, stop, step = value["range"]
        return list(np.arange(start, stop + (step if isinstance(step, int) else 0), step).tolist())
    if isinstance(value, dict) and set(value) == {"logrange"}:
        start, stop, num = value["logrange"]
        vals = np.geomspace(start, stop, int(num))
        return [int(round(v)) for v in vals] if all(isinstance(x, int) for x in (start, stop)) else vals.tolist()
    return value


def run_sweep_file(spec_path: str, out_path: str):
    from perfsim.api import sweep

    spec = load_yaml(spec_path)
    if not isinstance(spec, dict):
        raise InputError("a sweep spec is a mapping of estimate arguments", file=spec_path)
    args = {k: _expand_range(v, k) for k, v in spec.items()}
    if isinstance(args.get("hardware"), dict):
        args["hardware"] = {k: _expand_range(v, f"hardware.{k}") for k, v in args["hardware"].items()}
    suffix = Path(out_path).suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise InputError(f"unknown output format {suffix!r}: use .csv or .parquet", field="--out")
    df = sweep(**args)
    target = Path(out_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            try:
                df.to_parquet(tmp, index=False)
            except ImportError:
                raise InputError("writing parquet needs pyarrow (pip install pyarrow)", field="--out") from None
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return df
