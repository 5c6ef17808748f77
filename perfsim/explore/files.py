"""Sweep spec files and sweeps written to CSV or parquet in chunks, atomically and resumably.

A spec is YAML: estimate arguments whose lists are axes, either flat or in sections::

    axes:                                  # lists, {range: [a, b, step]}, {logrange: [a, b, n]}
      tp: [1, 2, 4, 8]
      batch: {logrange: [1, 256, 9]}
    fixed: {model: llama2-70b, hardware: h100-sxm, prompt_len: 1024}
    constraints:                           # expressions over result columns (all must hold)
      - memory_per_device_gib.total <= memory_per_device_gib.capacity
      - ttft_s < 0.5

The rows are evaluated chunk by chunk (:mod:`perfsim.explore.chunks`) and each finished chunk is
written to ``OUT.partial/`` beside the output, with a manifest of the finished chunks and a hash
of the spec. When every chunk is done they are joined into a temporary file that is renamed onto
``OUT``, and ``OUT.partial/`` is removed. An interrupted run (Ctrl-C, a killed process) leaves
``OUT.partial/`` valid: running the same spec with the same ``--out`` again evaluates only the
chunks that are missing. An existing ``OUT`` is never replaced unless asked (``overwrite``), and
one run at a time writes it (``OUT.lock``, :mod:`perfsim.explore.lock`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from perfsim.errors import InputError, check_whole, finite, shown
from perfsim.explore.lock import output_lock
from perfsim.specs.paths import check_writable
from perfsim.specs.yamlio import load_yaml

FORMATS = (".csv", ".parquet")
_SECTIONS = ("axes", "fixed", "constraints")
_MANIFEST = "manifest.json"
MAX_AXIS_VALUES = 10**7  # values a range or logrange may expand to


def _version() -> str:
    """The installed perfsim's version (recorded with a sweep's output)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("perfsim")
    except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
        return "unknown"


def _numbers(value, n, key, where):
    if not isinstance(value, list) or len(value) != n or any(finite(v) is None for v in value):
        raise InputError(f"{key} takes a list of {n} numbers, all finite, got {shown(value)}", **where)
    return value


def _count(count, key, where) -> int:
    if count > MAX_AXIS_VALUES:
        raise InputError(f"{key} gives {count:,.0f} values; an axis takes at most {MAX_AXIS_VALUES:,}", **where)
    return int(count)


def _expand_range(value, field, where=None):
    """``{range: [start, stop, step]}`` (stop included) or ``{logrange: [start, stop, num]}`` → list."""
    where = {"field": field, **(where or {})}
    if isinstance(value, dict) and set(value) == {"range"}:
        start, stop, step = _numbers(value["range"], 3, "range", where)
        if not step > 0 or stop < start:
            raise InputError(f"range needs start <= stop and a positive step, got {value['range']!r}", **where)
        count = _count(np.floor((stop - start) / step * (1 + 1e-12) + 1e-9) + 1, "range", where)
        if all(isinstance(x, int) for x in (start, stop, step)):
            return [start + i * step for i in range(count)]
        return [float(start + i * step) for i in range(count)]
    if isinstance(value, dict) and set(value) == {"logrange"}:
        start, stop, num = _numbers(value["logrange"], 3, "logrange", where)
        if not (start > 0 and stop >= start and isinstance(num, int) and num >= 1):
            raise InputError(f"logrange needs 0 < start <= stop and a whole number of points, got "
                             f"{value['logrange']!r}", **where)
        vals = np.geomspace(start, stop, _count(num, "logrange", where))
        if all(isinstance(x, int) for x in (start, stop)):
            return list(dict.fromkeys(int(round(v)) for v in vals))
        return vals.tolist()
    return value


def _where(mapping, key):
    return mapping.where(key) if hasattr(mapping, "where") else {}


def read_spec(spec) -> tuple[dict, list]:
    """A spec (path or mapping) → ``(args, constraints)``: estimate arguments with ranges expanded
    into lists, and the constraint strings."""
    path = None
    if not isinstance(spec, dict):
        path = str(spec)
        spec = load_yaml(path, "spec")
        if not isinstance(spec, dict):
            raise InputError("a sweep spec is a mapping of estimate arguments", file=path)
    args: dict = {}
    sources = [(spec, {k: v for k, v in spec.items() if k not in _SECTIONS})]
    for section in ("fixed", "axes"):
        if section in spec:
            sub = spec[section]
            if not isinstance(sub, dict):
                raise InputError("expected a mapping of estimate arguments", field=section, **_where(spec, section))
            sources.append((sub, sub))
    for mapping, items in sources:
        for key, value in items.items():
            if key in args:
                raise InputError("given twice (in two sections of the spec)", field=key, **_where(mapping, key))
            where = _where(mapping, key)
            value = _expand_range(value, key, where)
            if key == "hardware" and isinstance(value, dict):
                value = {k: _expand_range(v, f"hardware.{k}", _where(value, k)) for k, v in value.items()}
            args[key] = value
    constraints = spec.get("constraints") or []
    if isinstance(constraints, str):
        constraints = [constraints]
    if not isinstance(constraints, list) or not all(isinstance(c, str) for c in constraints):
        raise InputError("expected a list of expressions such as 'ttft_s < 0.5'", field="constraints",
                         **_where(spec, "constraints"))
    return args, constraints


def spec_hash(args: dict, constraints, keep_infeasible: bool, chunk_rows: int, fmt: str) -> str:
    """What a partial run must share with this one to be resumed by it."""

    text = json.dumps({"args": args, "constraints": list(constraints), "keep_infeasible": bool(keep_infeasible),
                       "chunk_rows": chunk_rows, "format": fmt, "version": _version()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _atomic_write_text(path: Path, text: str):
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class _Partial:
    """``OUT.partial/``: finished chunk files and the manifest naming them."""

    def __init__(self, target: Path, digest: str, rows: int, chunk_rows: int, chunks: int, restart: bool):
        self.dir = target.with_name(target.name + ".partial")
        self.manifest = self.dir / _MANIFEST
        self.state = {"spec_hash": digest, "rows": rows, "chunk_rows": chunk_rows, "chunks": chunks, "done": [],
                      "stats": {}}
        if self.dir.exists():
            old = self._read()
            if old is not None and old.get("spec_hash") != digest and not restart:
                raise InputError(f"{self.dir} holds an unfinished sweep of another spec or other options; run that "
                                 "one again to finish it, or pass --restart to discard it", field="--out")
            if old is None or old.get("spec_hash") != digest:
                shutil.rmtree(self.dir)
            else:
                self.state["done"] = sorted(k for k in old["done"] if self.path(k).exists())
                stats = old.get("stats", {})
                self.state["stats"] = {str(k): stats[str(k)] for k in self.state["done"] if str(k) in stats}
        self.dir.mkdir(parents=True, exist_ok=True)
        self._save()

    def _read(self):
        try:
            return json.loads(self.manifest.read_text())
        except (OSError, ValueError):
            return None

    def _save(self):
        _atomic_write_text(self.manifest, json.dumps(self.state, indent=1))

    def path(self, k: int) -> Path:
        return self.dir / f"chunk-{k:06d}.arrow"

    @property
    def done(self) -> set:
        return set(self.state["done"])

    def add(self, k: int, df: pd.DataFrame, stats: dict):
        """Write chunk ``k`` (temp file, then rename) and record it as done. Chunks are Arrow IPC
        files with LZ4-compressed buffers: as small as parquet, several times faster to write and read."""
        from pyarrow import feather

        path = self.path(k)
        tmp = path.with_name(path.name + ".tmp")
        feather.write_feather(_arrow(df), tmp, compression="lz4")
        os.replace(tmp, path)
        self.state["done"] = sorted({*self.state["done"], k})
        self.state["stats"][str(k)] = stats
        self._save()


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise InputError("sweeps written to files need pyarrow (pip install pyarrow)", field="--out") from None
    return pyarrow


def _arrow(df: pd.DataFrame):
    """A chunk as an arrow table whose types do not depend on its rows (an all-None text column is
    text, not null), so every chunk has the same schema."""
    pa = _pyarrow()
    table = pa.Table.from_pandas(df, preserve_index=False)
    fields = []
    for field in table.schema:
        if pa.types.is_null(field.type) or pa.types.is_large_string(field.type):
            field = field.with_type(pa.string())
        fields.append(field)
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))


def _union_schema(paths):
    """Every chunk's columns, in order of first appearance: a chunk whose rows have no NPU, PIM or
    job length lacks the keys that describe them."""
    pa = _pyarrow()
    fields: dict = {}
    metadata = None
    for path in paths:
        with pa.memory_map(str(path)) as source:
            schema = pa.ipc.open_file(source).schema
        metadata = metadata or schema.metadata
        for field in schema:
            fields.setdefault(field.name, field)
    return pa.schema(list(fields.values()), metadata=metadata)


def _conform(table, schema):
    """``table`` with the columns of ``schema`` in its order; a column it lacks is missing (null)."""
    pa = _pyarrow()
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def _finish(partial: _Partial, chunks: int, target: Path, fmt: str):
    """Join the chunk files in order into a temporary file and rename it onto ``target``."""
    import pyarrow.parquet as pq
    from pyarrow import feather

    pa = _pyarrow()
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        schema = _union_schema([partial.path(k) for k in range(chunks)])
        if fmt == ".parquet":
            # dictionary pages for the label columns only: numbers encode faster plain, and as small
            labels = [f.name for f in schema if pa.types.is_dictionary(f.type)]
            with pq.ParquetWriter(tmp, schema, use_dictionary=labels or False) as writer:
                for k in range(chunks):
                    table = _conform(feather.read_table(partial.path(k)), schema)
                    if table.num_rows or k == 0:
                        writer.write_table(table)
        else:
            with open(tmp, "w", newline="") as f:
                for k in range(chunks):
                    df = _conform(feather.read_table(partial.path(k)), schema).to_pandas()
                    df.to_csv(f, index=False, header=(k == 0))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a results file, readable as any other the user writes
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    shutil.rmtree(partial.dir, ignore_errors=True)


@contextlib.contextmanager
def _writing():
    """An operating-system error while writing the output (a full or read-only disk, a name too
    long for ``OUT.partial``) as an :class:`InputError` about ``--out``."""
    try:
        yield
    except OSError as exc:
        where = f" {shown(exc.filename)}" if exc.filename else ""
        raise InputError(f"cannot write{where}: {exc.strerror or exc}", field="--out") from None


def write_sweep(args: dict, out_path, constraints=None, *, keep_infeasible: bool = False, chunk_rows=None,
                backend: str = "local", scheduler=None, overwrite: bool = False, restart: bool = False,
                progress=None, max_rows=None) -> dict:
    """Evaluate the sweep of ``args`` chunk by chunk into ``out_path`` (``.csv`` or ``.parquet``).

    Resumable: chunks finished by an earlier, interrupted run of the same sweep (same arguments,
    constraints, options and ``out_path``) are not evaluated again. A sweep of more than
    ``max_rows`` rows (default 50 million) is refused before any work.

    Returns
    -------
    dict
        ``rows`` (written), ``total_rows`` (in the grid), ``feasible`` (rows written that are
        feasible), ``chunks``, ``resumed_chunks`` (done by an earlier run) and ``out``.
    """
    from perfsim.explore.chunks import (
        check_backend,
        check_chunk_rows,
        check_constraints,
        chunk_bounds,
        default_chunk_rows,
    )
    from perfsim.plan.grid import MAX_ROWS
    from perfsim.plan.grid import space as make_space

    target = check_writable(out_path, "--out")
    fmt = target.suffix.lower()
    if fmt not in FORMATS:
        raise InputError(f"unknown output format {shown(fmt)}: use .csv or .parquet", field="--out")
    if target.exists() and not overwrite:
        raise InputError(f"{target} exists; pass --overwrite to replace it, or choose another file", field="--out")
    _pyarrow()
    backend = check_backend(backend)
    chunk_rows = None if chunk_rows is None else check_chunk_rows(chunk_rows, "--chunk-rows")
    max_rows = MAX_ROWS if max_rows is None else check_whole(max_rows, "--max-rows")
    space = make_space(args, max_rows, "--max-rows")
    chunk_rows = default_chunk_rows(space) if chunk_rows is None else chunk_rows
    parsed = check_constraints(space, constraints)
    bounds = chunk_bounds(space.n, chunk_rows)
    digest = spec_hash(args, [c.text for c in parsed], keep_infeasible, chunk_rows, fmt)
    with contextlib.ExitStack() as held:
        with _writing():
            held.enter_context(output_lock(target))
        if target.exists() and not overwrite:  # finished by a run that held the lock since the check above
            raise InputError(f"{target} exists; pass --overwrite to replace it, or choose another file",
                             field="--out")
        with _writing():
            partial = _Partial(target, digest, space.n, chunk_rows, len(bounds), restart)
        return _evaluate(partial, target, fmt, space, bounds, parsed, keep_infeasible=keep_infeasible,
                         backend=backend, scheduler=scheduler, progress=progress)


def _evaluate(partial, target, fmt, space, bounds, parsed, *, keep_infeasible, backend, scheduler, progress) -> dict:
    """The chunks not done yet into ``OUT.partial/``, then joined onto ``OUT`` (the lock held)."""
    from perfsim.explore.chunks import Progress, run_chunks

    done = partial.done
    todo = [k for k in range(len(bounds)) if k not in done]
    bar = Progress(space.n, enabled=progress)
    bar.skip(sum(bounds[k][1] - bounds[k][0] for k in done))
    try:
        for k, df in run_chunks(space, bounds, todo, parsed, keep_infeasible, backend, scheduler):
            with _writing():
                partial.add(k, df, {"rows": len(df), "feasible": int(df["feasible"].sum())})
            bar.advance(bounds[k][1] - bounds[k][0])
    finally:
        bar.close()
    stats = partial.state.get("stats", {})
    summary = {"rows": sum(s["rows"] for s in stats.values()), "total_rows": space.n,
               "feasible": sum(s["feasible"] for s in stats.values()), "chunks": len(bounds),
               "resumed_chunks": len(done), "out": str(target)}
    with _writing():
        _finish(partial, len(bounds), target, fmt)
    return summary


def run_sweep_file(spec_path: str, out_path: str, **options) -> dict:
    """Run the sweep spec file ``spec_path`` into ``out_path`` (see :func:`write_sweep`)."""
    args, constraints = read_spec(spec_path)
    return write_sweep(args, out_path, constraints, **options)
