"""Evaluate a grid of configurations: arguments → columns → closed forms → result arrays."""

from __future__ import annotations

import itertools

import numpy as np

from perfsim.analytical.energy import inference_power, train_power
from perfsim.analytical.heterogeneous import bottleneck_device, placement_checks
from perfsim.analytical.inference import estimate_inference, one_configuration
from perfsim.analytical.training import estimate_train, stage_prices
from perfsim.graph.params import total_params
from perfsim.plan.arguments import Recompute, Schedule
from perfsim.plan.columns import build
from perfsim.plan.grid import Axis, Grid, Space, expand
from perfsim.plan.offload import ARGUMENT_COLUMNS, AUTO_ARGUMENTS, AUTO_CHOICES
from perfsim.plan.rows import Detail, any_row, numeric, value_at

_DETAIL_ROWS = 10_000  # rows up to which infeasibility reasons carry their numbers
# codes as the columns hold them (a float compares with a column faster than an IntEnum member)
_INTERLEAVED, _AUTO = float(Schedule.INTERLEAVED), float(Recompute.AUTO)
_LIGHTEST_FIRST = tuple(float(r) for r in (Recompute.NONE, Recompute.SELECTIVE, Recompute.FULL))


def _plan_checks(c):
    """Checks that do not depend on the mode: degrees, divisibility, formats."""
    nd, tp, pp, cp, dp = c["num_devices"], c["tp"], c["pp"], c["cp"], c["dp"]
    return [
        (np.isnan(c["peak_flops"]), "the hardware has no tensor rate for this dtype (its spec lists the dtypes it has: "
                                    "perfsim list hardware)", None),
        ((c["dequant"] > 0) & np.isnan(c["vector_flops"]),
         "weight_dtype differs from dtype but the hardware spec has no vector rate to convert weights", None),
        (np.abs(nd - tp * pp * dp * cp) > 1e-9, "num_devices is not tp x pp x dp x cp", None),
        (np.abs(dp - np.round(dp)) > 1e-9, "num_devices does not split into tp x pp x cp groups", None),
        ((numeric(c["heads"]) % numeric(tp) != 0) & (c["kv_heads"] > 1),
         "tp does not divide the attention heads", None),
        (numeric(pp) > numeric(c["layers"]), "pp exceeds the layers (a stage would hold none)", None),
        (~np.isnan(c["pp_layers_stages"]) & (c["pp_layers_stages"] != pp), "pp_layers does not list pp stages", None),
        (~np.isnan(c["pp_layers_total"]) & (c["pp_layers_total"] != c["layers"]),
         "pp_layers does not add up to the model's layers", None),
        ((c["experts"] > 0) & (numeric(c["experts"]) % numeric(c["ep"]) != 0),
         "ep does not divide the experts", None),
        ((c["ep"] > 1) & (numeric(tp * dp * cp) % numeric(c["ep"]) != 0),
         "ep does not divide tp x dp x cp", None),
        ((c["ep"] > 1) & (c["experts"] == 0), "ep > 1 needs an MoE model", None),
        ((c["zero"] > 0) & (numeric(dp * cp) % numeric(c["zero_shard_size"]) != 0),
         "zero_shard_size does not divide dp x cp", None),
        ((c["pim_args"] > 0) & (c["has_pim"] == 0), "pim_mode and sub_batches need a system with PIM memory", None),
        *placement_checks(c),
        ((c["train"] > 0) & _searched(c), "offload auto is a searched inference placement; training takes none, a "
                                          "tier or fractions", None),
        # uneven virtual stages are fine (Megatron-core counts the embedding and the loss as a layer
        # each in the split: account_for_{embedding,loss}_in_pipeline_split), empty ones are not
        ((c["schedule"] == _INTERLEAVED) & (numeric(pp * c["virtual_stages"]) > numeric(c["layers"]) + 2),
         "pp x virtual_stages exceeds the layers (a virtual stage would hold none)", None),
    ]


def evaluate(args: dict):
    """Evaluate every combination of ``args``; returns ``(grid, outputs)``.

    ``outputs`` maps result keys (dotted for nested ones) to arrays of ``grid.n`` rows, plus
    ``feasible`` (bool) and ``reason`` (object: None or a string).
    """
    grid = expand(args)
    return grid, evaluate_grid(grid)


_CHUNK = 1 << 16  # rows per block: keeps the arrays of one block in cache


def evaluate_grid(grid: Grid) -> dict:
    """Evaluate a grid block by block (bounded memory, cache-sized arrays) and join the blocks."""
    if grid.n <= _CHUNK:
        return _evaluate_block(grid)
    out: dict = {}
    seen: dict = {}
    for start in range(0, grid.n, _CHUNK):
        stop = min(start + _CHUNK, grid.n)
        axes = {name: Axis(a.name, a.values, a.codes[start:stop] if len(a.values) > 1 else a.codes)
                for name, a in grid.axes.items()}
        _join(out, seen, _evaluate_block(Grid(n=stop - start, axes=axes), details=grid.n <= _DETAIL_ROWS),
              start, stop, grid.n)
    return _fill(out, seen, grid.n)


def whole_boxes(space: Space, rows: int) -> int:
    """``rows`` per chunk of a sweep of ``space``, rounded down to whole boxes of :func:`evaluate_rows`
    (at least one): chunks that end where a box ends, not in a few rows of a box that each cost a
    block's fixed work (the same results: boxes price each row as rows do)."""
    box = space.box_rows(_CHUNK)
    return rows if rows >= space.n or box >= rows else rows // box * box


def evaluate_rows(space: Space, start: int, stop: int, apart=None) -> tuple[Grid, dict]:
    """Evaluate rows ``[start, stop)`` of a :class:`~perfsim.plan.grid.Space`; returns ``(grid, outputs)``
    for those rows only (what a chunked sweep holds at a time).

    The rows are evaluated in cache-sized boxes of the space (:meth:`~perfsim.plan.grid.Space.boxes`),
    so a quantity that depends on some axes only is computed once per combination of those. The
    float outputs whose key ``apart(key)`` is true are left in the boxes' pieces (:class:`Pieces`,
    for a caller that copies them into a table of its own), the others joined into arrays.
    """
    grid = space.block(start, stop)
    n = stop - start
    boxes = list(space.boxes(start, stop, _CHUNK))
    details = space.n <= _DETAIL_ROWS  # reasons carry their numbers in small sweeps, however evaluated
    if len(boxes) == 1:
        out = _evaluate_block(boxes[0][1], details=details)
    else:
        out, seen, kept, order = {}, {}, {}, {}
        for first, box in boxes:
            block = _evaluate_block(box, details=details)
            order.update(dict.fromkeys(block))
            for key in [k for k, v in block.items() if apart is not None and v.dtype == np.float64 and apart(k)]:
                kept.setdefault(key, []).append((first - start, block.pop(key)))
            _join(out, seen, block, first - start, first - start + box.n, n)
        out = _fill(out, seen, n)
        for key, parts in kept.items():
            if key in out or sum(len(a) for _, a in parts) < n:  # not every box's, or not float in every box
                column = out[key] if key in out else np.full(n, np.nan)
                Pieces(n, parts).write(column)
                out[key] = column
            else:
                out[key] = Pieces(n, parts)
        out = {key: out[key] for key in order}
    return grid, out


class Pieces:
    """A float column of ``n`` rows left in the pieces its boxes computed, ``(first row, array)``
    each, for a table that copies it into place (:meth:`write`) rather than join it first."""

    __slots__ = ("n", "parts")
    dtype = np.dtype(np.float64)
    ndim = 1

    def __init__(self, n: int, parts: list):
        self.n, self.parts = n, parts

    def __len__(self) -> int:
        return self.n

    def write(self, into: np.ndarray):
        """Copy the rows into ``into`` (an array of ``n`` rows)."""
        for first, array in self.parts:
            into[first:first + len(array)] = array

    def __array__(self, dtype=None, copy=None):
        column = np.full(self.n, np.nan)
        self.write(column)
        return column if dtype is None else column.astype(dtype)


def _join(out: dict, seen: dict, block: dict, start: int, stop: int, n: int):
    for key, value in block.items():
        if key not in out:
            out[key] = np.empty(n, dtype=value.dtype)
            seen[key] = []
        out[key][start:stop] = value
        seen[key].append((start, stop))


def _fill(out: dict, seen: dict, n: int) -> dict:
    """Rows of blocks that did not produce a key (no row there has the device or option it
    describes) hold NaN (None for text) in it, not whatever the memory held."""
    for key, ranges in seen.items():
        if sum(b - a for a, b in ranges) < n:
            text = out[key].dtype == object
            blank = np.full(n, None if text else np.nan, dtype=object if text else float)
            for a, b in ranges:
                blank[a:b] = out[key][a:b]
            out[key] = blank
    return out


def evaluate_columns(args: dict):
    """Evaluate every combination of ``args`` in one block; returns ``(c, outputs)``: the columns
    the cost models read (:func:`perfsim.plan.columns.build`) with the outputs, for callers that
    compose the same costs themselves (the timelines of :mod:`perfsim.events.pipeline`). The columns
    carry the choices the evaluation made (``recompute: auto`` resolved), so those callers price the
    same plan."""
    grid = expand(args)
    c = build(grid)
    out = _evaluate_block(grid, c)
    chosen = out.get("plan.recompute")
    if chosen is not None and not np.all(np.isnan(chosen)):
        c = dict(c, recompute=np.where(np.isnan(chosen), c["recompute"], chosen))
    if any_row(_searched(c)):
        c = dict(c, **{key: out[f"plan.{key}"] for key in _placement_columns() if f"plan.{key}" in out})
    return c, out


def _evaluate_block(grid: Grid, c: dict | None = None, details: bool | None = None) -> dict:
    c = build(grid) if c is None else c
    details = grid.n <= _DETAIL_ROWS if details is None else details
    n = grid.n
    modes = grid.values("mode")
    results = []
    one = one_configuration(c)  # (read once for the estimate and its power)
    for mode in modes:
        fn, power = (_train_least_recompute, train_power) if mode == "train" else (_inference_best_offload,
                                                                                  inference_power)
        out, checks = fn(c, one)
        out.update(power(c, out, one=one))
        results.append((mode, out, checks))
    if len(results) == 1:
        out, checks = results[0][1], results[0][2]
    else:
        train = np.asarray(c["train"]) > 0
        out = {}
        keys = dict.fromkeys(k for _, o, _ in results for k in o)
        for key in keys:
            vals = {m: o.get(key, np.nan) for m, o, _ in results}
            out[key] = np.where(train, vals.get("train", np.nan), vals.get("inference", np.nan))
        checks = []
        for m, _, chk in results:
            sel = train if m == "train" else ~train
            checks += [(np.asarray(mask) & sel, short, detail) for mask, short, detail in chk]
    checks = _plan_checks(c) + checks
    shape = grid.block_shape
    out = _one_value_each(out) if n == 1 else {k: _rows(np.asarray(v, dtype=float), shape) for k, v in out.items()}
    feasible = np.ones(n, dtype=bool)
    reason = np.full(n, None, dtype=object)
    for mask, short, detail in checks:
        if not any_row(mask):  # (one configuration's checks give NumPy bools: read without a NumPy call)
            continue  # no row fails it (most checks, most rows)
        mask = _rows(np.asarray(mask, dtype=bool), shape)
        new = mask & feasible
        if any_row(new):
            if detail is not None and details:
                rows = np.flatnonzero(new)
                texts = _messages(detail, rows, shape)
                if len(texts) != len(rows):  # pragma: no cover - a message per row
                    raise ValueError(f"{len(texts)} messages for {len(rows)} rows")
                reason[rows] = texts
            else:
                reason[new] = short
            feasible &= ~mask
    out["feasible"] = feasible
    out["reason"] = reason
    out["bottleneck_device"] = bottleneck_device(c, out, n, shape)
    out["parameters"] = _rows(np.asarray(total_params(c), dtype=float), shape)
    out["num_devices"] = _rows(np.asarray(c["num_devices"], dtype=float), shape)
    out["dp"] = _rows(np.asarray(c["dp"], dtype=float), shape)
    # the plan as resolved (defaults that depend on other arguments, the engine's own choices)
    for key in ("zero", "sp", "global_batch", "micro_batch", "default_engine", "layers"):
        out[f"plan.{key}"] = _rows(np.asarray(c[key], dtype=float), shape)
    return out


def _train_least_recompute(c, one=None):
    """:func:`estimate_train`, with ``recompute: auto`` resolved row by row to the least
    recomputation whose step fits (none, then selective, then full; full where none does), as a
    team picks it. The choice is the output ``plan.recompute`` (a :class:`Recompute` code). ``one``:
    :func:`one_configuration` of ``c``, where known."""
    auto = numeric(c["recompute"]) == _AUTO
    if not any_row(auto):
        out, checks = estimate_train(c)
        out["plan.recompute"] = c["recompute"]
        return out, checks
    if one_configuration(c) if one is None else one:  # the options together
        return _least_recompute_together(c)
    chosen = resolved = None
    out: dict = {}
    checks: list = []
    prices = stage_prices(c)  # the passes' prices do not depend on the recomputation
    for option in _LIGHTEST_FIRST:
        if resolved is not None and np.all(resolved | ~auto):
            break  # every row found its recomputation: the heavier ones need not be priced
        trial_c = dict(c, recompute=np.where(auto, option, c["recompute"]))
        trial, trial_checks = estimate_train(trial_c, prices)
        fits = ~_flagged(trial_checks, auto)
        take = auto & fits if chosen is None else auto & fits & ~resolved
        if option == _LIGHTEST_FIRST[-1]:  # full where nothing lighter fits, with its reasons
            take = auto & ~resolved if resolved is not None else auto
        if chosen is None:  # the rows that are not auto take their own value's results here
            take = take | ~auto
            out, checks, chosen, resolved = trial, trial_checks, trial_c["recompute"], take
            continue
        out, checks = _merged(take, trial, trial_checks, out, checks)
        chosen = np.where(take, option, chosen)
        resolved = resolved | take
    out["plan.recompute"] = chosen
    return out, checks


def _least_recompute_together(c):
    """:func:`_train_least_recompute` of one configuration (every column one number): its options
    priced in one call on an axis of three (each option's values elementwise as priced alone), then
    the lightest that fits taken, else full with its reasons."""
    options = np.array(_LIGHTEST_FIRST)
    trial, checks = estimate_train(dict(c, recompute=options), stage_prices(c))
    fits = ~_flagged(checks, options)
    i = int(np.argmax(fits)) if any_row(fits) else len(options) - 1
    out = {k: _option(v, i) for k, v in trial.items()}
    out["plan.recompute"] = options[i]
    return out, [(_option(m, i), short, Detail(d.text, *(_option(v, i) for v in d.values), per=d.per)
                  if isinstance(d, Detail) else d) for m, short, d in checks]


def _option(value, i):
    """One option's value of a result priced on an axis of options (a value without it: the same for each)."""
    if value.__class__ is np.ndarray:  # (most values: without np.ndim's dispatch)
        return value[i] if value.ndim else value
    return value[i] if np.ndim(value) else value


def _placement_columns():
    return [f"{ARGUMENT_COLUMNS[name]}_frac_{tier}" for name in AUTO_ARGUMENTS for tier in ("cpu", "nvme")]


def _searched(c):
    """Rows with an ``auto`` placement."""
    return sum(numeric(c[f"{ARGUMENT_COLUMNS[name]}_auto"]) for name in AUTO_ARGUMENTS) > 0


def _inference_best_offload(c, one=None):
    """:func:`estimate_inference`, with ``offload_weights``, ``offload_kv`` and
    ``offload_activations`` given as ``auto`` resolved row by row to the placement of highest
    throughput among those that fit every tier, as FlexGen's policy search picks its policy
    (Sheng et al. 2023, Sec. 4.3: maximise throughput over the placement fractions under the GPU,
    CPU and disk memory limits; the GPU batch is then the largest that fits, as
    :func:`perfsim.analytical.offload.gpu_batches` takes it). The candidates are
    :data:`perfsim.plan.offload.AUTO_CHOICES`, each priced for every row at once; a row where
    none fits keeps the first (everything in host memory) and its reasons. The chosen fractions
    are the outputs ``plan.w_frac_cpu``, ``plan.kv_frac_nvme``, ... ``one``: :func:`one_configuration` of
    ``c``, where known."""
    searched = _searched(c)
    if not any_row(searched):
        out, checks = estimate_inference(c, one)
        for key in _placement_columns():
            out[f"plan.{key}"] = c[key]
        return out, checks
    axes = []
    for name in AUTO_ARGUMENTS:
        prefix = ARGUMENT_COLUMNS[name]
        auto = numeric(c[f"{prefix}_auto"]) > 0
        # host memory first: the first candidate is FlexGen's all-CPU policy
        choices = sorted(AUTO_CHOICES[name], key=lambda s: (s[1] < 1.0, s[2] > 0.0, -s[1])) if any_row(auto) else [None]
        axes.append([(prefix, auto, choice) for choice in choices])
    out: dict = {}
    checks: list = []
    best = None
    for combo in itertools.product(*axes):
        trial_c = dict(c)
        for prefix, auto, choice in combo:
            if choice is not None:
                for i, tier in ((1, "cpu"), (2, "nvme")):
                    trial_c[f"{prefix}_frac_{tier}"] = np.where(auto, choice[i], c[f"{prefix}_frac_{tier}"])
        for tier in ("cpu", "nvme"):  # routed experts not placed apart go with the weights
            trial_c[f"exp_frac_{tier}"] = np.where(c["exp_given"] > 0, c[f"exp_frac_{tier}"], trial_c[f"w_frac_{tier}"])
        trial, trial_checks = estimate_inference(trial_c)
        for key in _placement_columns():
            trial[f"plan.{key}"] = trial_c[key]
        rate = np.asarray(trial["throughput_tokens_per_s"], dtype=float)
        score = np.where(_flagged(trial_checks, rate) | ~np.isfinite(rate), -np.inf, rate)
        if best is None:
            out, checks, best = trial, trial_checks, score
            continue
        take = searched & (score > best)
        if not any_row(take):
            continue
        out, checks = _merged(take, trial, trial_checks, out, checks)
        best = np.where(take, score, best)
    return out, checks


def _flagged(checks, like):
    """Rows (shaped as ``like``) that any of ``checks`` flags."""
    flagged = np.zeros(np.shape(like), dtype=bool)
    for mask, _, _ in checks:
        flagged = flagged | np.asarray(mask, dtype=bool)
    return flagged


def _merged(take, trial, trial_checks, out, checks):
    """Results and checks of ``trial`` on the rows ``take``, of ``out`` elsewhere."""
    if not any_row(take):  # (no row taken, or every row: each value as its side gives it, no where() per key)
        return out, [(np.asarray(m, dtype=bool), short, d if d is not None else td)
                     for (m, short, d), (_, _, td) in zip(checks, trial_checks, strict=True)]
    if np.all(take):
        return ({k: trial[k] for k in out},
                [(np.asarray(tm, dtype=bool), short, td if td is not None else d)
                 for (_, short, d), (tm, _, td) in zip(checks, trial_checks, strict=True)])
    return ({k: np.where(take, trial[k], out[k]) for k in out},
            [(np.where(take, np.asarray(tm, dtype=bool), np.asarray(m, dtype=bool)), short, _either(take, td, d))
             for (m, short, d), (tm, _, td) in zip(checks, trial_checks, strict=True)])


def _either(take, detail_if, detail_else):
    """A check's detail message: ``detail_if`` for the rows in ``take``, else ``detail_else``."""
    if detail_if is None or detail_else is None:
        return detail_if or detail_else
    return _Either(take, detail_if, detail_else)


class _Either:
    """:func:`_either`'s message: called with one row, or given many (:meth:`Detail.rows`)."""

    def __init__(self, take, detail_if, detail_else):
        self.take, self.detail_if, self.detail_else = take, detail_if, detail_else

    def __call__(self, i) -> str:
        return self.detail_if(i) if bool(value_at(self.take, i)) else self.detail_else(i)

    def rows(self, rows: np.ndarray, shape: tuple) -> list[str]:
        chosen = np.broadcast_to(np.asarray(self.take, dtype=float), shape)[np.unravel_index(rows, shape)] != 0
        texts: list = [None] * len(rows)
        for pick, detail in ((chosen, self.detail_if), (~chosen, self.detail_else)):
            where = np.flatnonzero(pick)
            if len(where):
                for k, text in zip(where.tolist(), _messages(detail, rows[where], shape), strict=True):
                    texts[k] = text
        return texts


def _messages(detail, rows: np.ndarray, shape: tuple) -> list[str]:
    """The messages of a check's ``detail`` for the rows ``rows`` of a block of ``shape``."""
    if shape == (1,):  # one row (an estimate): its message, its numbers read without broadcasting them
        return [detail(0)]
    if hasattr(detail, "rows"):  # every row's numbers at once
        return detail.rows(rows, shape)
    # a box's columns are indexed by its coordinates
    at = rows.tolist() if len(shape) == 1 else zip(*(a.tolist() for a in np.unravel_index(rows, shape)))
    return [detail(where) for where in at]


def _one_value_each(out: dict) -> dict:
    """The outputs of a one-row block (each a number) as read-only arrays of one row: views of one
    table, made in one step rather than one array at a time."""
    values = list(out.values())
    try:  # every value a number (the usual case): one conversion
        table = np.array(values, dtype=float).reshape(-1, 1)
    except ValueError:  # (one-element arrays among numbers)
        table = None
    if table is None or len(table) != len(values):
        table = np.array([np.asarray(v, dtype=float).item() for v in values], dtype=float).reshape(-1, 1)
    table.flags.writeable = False
    return dict(zip(out, table, strict=True))


def _rows(value: np.ndarray, shape: tuple) -> np.ndarray:
    """A column over a block (rows, or a box's shape) as one value per row, in row order (a
    read-only view where it is the column's own array)."""
    if value.shape == shape or (value.ndim == 0 and shape == (1,)):  # already one value per row
        view = value.reshape(-1)
        view.flags.writeable = False
        return view
    if len(shape) == 1:
        return np.broadcast_to(value, shape)
    column = np.empty(shape, dtype=value.dtype)  # the broadcast laid out (np.broadcast_to's view takes ~2 us more)
    column[...] = value
    return column.reshape(-1)
