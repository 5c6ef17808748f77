"""Compare predictions with published measurements (``validation/cases.yaml``).

Each case names a call, its arguments, a result key (dotted for nested keys) and the published
value; a ratio case adds ``baseline`` (arguments merged over ``args`` for the denominator run).
A case that cannot run — an unknown name, a call or option perfsim lacks — is kept with its
reason and counts as a failure, never as a traceback. A plan perfsim judges infeasible (it does
not fit memory) still reports its number, flagged ``infeasible plan`` with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from perfsim.errors import InputError
from perfsim.specs.paths import data_dir
from perfsim.specs.yamlio import load_yaml

if TYPE_CHECKING:
    import pandas as pd


def _calls():
    from perfsim import api

    return {"estimate": api.estimate, "serve": _cached(api.serve), "gemm": api.gemm, "collective": api.collective,
            "memcpy": api.memcpy}


def _cached(call):
    """``call`` remembering its results by arguments: many serving cases read several metrics of one run."""
    results: dict = {}

    def run(**args):
        key = json.dumps(args, sort_keys=True, default=str)
        if key not in results:
            results[key] = call(**args)
        return results[key]

    return run


def _metric(result: dict, key: str):
    node = result
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def _run(call, args, metric):
    """``(value, reason)``: the metric, and why the plan is infeasible (None when it is not).

    An infeasible plan still yields its number where the model computes one (memory of a plan
    that does not fit is exactly what memory cases ask for)."""
    result = call(**args)
    reason = None
    if isinstance(result, dict) and result.get("feasible") is False:
        reason = result.get("reason") or "infeasible"
    try:
        value = _metric(result, metric)
    except KeyError:
        if reason:
            raise _Infeasible(reason) from None
        raise
    if value is None or not np.isfinite(float(value)):
        if reason:
            raise _Infeasible(reason)
        raise KeyError(metric)
    return float(value), reason


class _Infeasible(Exception):
    pass


def load_cases(path=None) -> list[dict]:
    """Cases of ``path`` (default: the project's ``validation/cases.yaml``)."""
    path = Path(path) if path else data_dir("validation") / "cases.yaml"
    cases = load_yaml(path)
    if not isinstance(cases, list):
        raise InputError("expected a list of cases", file=str(path))
    return [dict(c) for c in cases]


def run_case(case: dict, calls=None) -> dict:
    """Run one case: ``predicted``, ``error`` (signed, relative) and ``status`` / ``reason``."""
    row = {"id": case.get("id"), "category": case.get("category"), "call": case.get("call"),
           "metric": case.get("metric"), "published": float(case.get("value", np.nan)),
           "predicted": np.nan, "error": np.nan, "status": "ok", "reason": None,
           "ratio": "baseline" in case}
    calls = calls or _calls()
    call = calls.get(case.get("call"))
    if call is None:
        row.update(status="cannot run", reason=f"call {case.get('call')!r} is not available in this version")
        return row
    args = dict(case.get("args") or {})
    try:
        predicted, reason = _run(call, args, case["metric"])
        if "baseline" in case:
            denominator, base_reason = _run(call, {**args, **dict(case["baseline"])}, case["metric"])
            predicted = predicted / denominator
            reason = reason or (f"baseline: {base_reason}" if base_reason else None)
    except _Infeasible as exc:
        row.update(status="infeasible", reason=str(exc))
        return row
    except InputError as exc:
        row.update(status="cannot run", reason=str(exc))
        return row
    except KeyError as exc:
        row.update(status="cannot run", reason=f"result has no key {exc.args[0]!r}")
        return row
    except Exception as exc:  # a bug, not bad input: reported, and makes `perfsim validate` fail
        row.update(status="error", reason=f"{type(exc).__name__}: {exc}")
        return row
    row["predicted"] = predicted
    row["error"] = predicted / row["published"] - 1.0 if row["published"] else np.nan
    if reason:
        row.update(status="infeasible plan", reason=reason)
    return row


def source_of(case_id: str) -> str:
    """The publication a case comes from, as its id's first two parts (``T-MEG21-03`` -> ``T-MEG21``)."""
    return "-".join(str(case_id).split("-")[:2])


def validate(suite=None, path=None, category=None, source=None) -> pd.DataFrame:
    """Run the validation cases; ``suite`` filters by category or id prefix, ``category`` by category,
    ``source`` by the source part of the id (:func:`source_of`, or any id prefix).

    Returns
    -------
    pandas.DataFrame
        One row per case: ``id``, ``category``, ``call``, ``metric``, ``published``,
        ``predicted``, ``error`` (signed relative: predicted / published - 1), ``status``
        (``ok``, ``infeasible plan`` (a number, but the plan cannot run as given), ``infeasible``
        (no number), ``cannot run`` or ``error`` (a bug)) and ``reason``.
    """
    cases = load_cases(path)
    if suite:
        cases = [c for c in cases if c.get("category") == suite or str(c.get("id", "")).startswith(suite)]
    if category:
        cases = [c for c in cases if c.get("category") == category]
    if source:
        cases = [c for c in cases if str(c.get("id", "")).startswith(source)]
    calls = _calls()  # one cache of serving runs for the whole suite
    import pandas as pd

    df = pd.DataFrame([run_case(c, calls) for c in cases])
    if len(df):
        df.insert(2, "source", [source_of(i) for i in df["id"]])
    return df


def summary(df: pd.DataFrame, by=("category",)) -> pd.DataFrame:
    """Per category (``by``: also ``("category", "source")``): cases, how many gave a number
    (``ran``; ``infeasible_plan`` of them for a plan perfsim says cannot run as given), how many did
    not (``failed``: cannot run, or a plan infeasible before any number), MAPE and count within 15 %
    over the cases that gave a number."""
    rows = []
    for key, part in df.groupby(list(by), sort=True):
        ran = part[np.isfinite(part["predicted"].astype(float))]
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True)),
                     "cases": len(part), "ran": len(ran),
                     "infeasible_plan": int((ran["status"] == "infeasible plan").sum()),
                     "failed": len(part) - len(ran),
                     "mape": float(np.mean(np.abs(ran["error"]))) if len(ran) else np.nan,
                     "within_15pct": int((np.abs(ran["error"]) <= 0.15).sum())})
    import pandas as pd

    return pd.DataFrame(rows)
