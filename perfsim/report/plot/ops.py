"""The ops of one layer with their FLOPs, device-memory bytes and time: points on a roofline.

The op graph (:mod:`perfsim.graph.transformer`) of a plan's prefill and decode passes (inference)
or of one micro-batch's forward pass (training), each op priced alone by the same cost model as
the estimate (:func:`perfsim.cost.price.price`), so a point's height is the rate the
estimate charges for that op, launch overhead included.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from perfsim.cost.price import price
from perfsim.graph.transformer import Attention, Comm, Elementwise, Gemm, Pass, layer_ops, lm_head_ops
from perfsim.plan.columns import build
from perfsim.plan.grid import expand


def _passes(c, mode):
    if mode == "train":
        mb, seq = c["micro_batch"], c["seq_len"]
        one = np.ones_like(np.asarray(mb * seq, dtype=float))
        return {"forward": Pass(tokens=mb * seq, seqs=mb, q_len=seq, kv_len=seq, causal=one, logits_tokens=mb * seq)}
    seqs = np.ceil(c["batch"] / np.maximum(np.floor(c["dp"]), 1.0))
    prompt, gen = c["prompt_len"], c["gen_len"]
    one = np.ones_like(np.asarray(seqs, dtype=float))
    return {"prefill": Pass(tokens=seqs * prompt, seqs=seqs, q_len=prompt, kv_len=prompt, causal=one,
                            logits_tokens=seqs),
            "decode": Pass(tokens=seqs, seqs=seqs, q_len=one, kv_len=prompt + gen / 2.0, causal=0.0 * one,
                           logits_tokens=seqs)}


def _kind(op):
    return {Gemm: "gemm", Attention: "attention", Elementwise: "elementwise", Comm: "communication"}[type(op)]


def op_points(**plan) -> pd.DataFrame:
    """FLOPs, bytes and time of every op of one layer (and the LM head) of a one-row plan.

    Returns
    -------
    pandas.DataFrame
        ``phase`` (prefill, decode; forward in training), ``op``, ``kind`` (gemm, attention,
        elementwise, communication), ``flops``, ``bytes`` (device memory), ``time_s``,
        ``intensity`` (FLOPs per byte) and ``tflops`` (attained, FLOPs / time).

    Examples
    --------
    >>> ops = op_points(model="llama2-7b", hardware="a100-80gb", batch=1)
    >>> gemm = ops[ops.op == "mlp_up"].set_index("phase")
    >>> bool(gemm.intensity["decode"] < gemm.intensity["prefill"])
    True
    """
    grid = expand(plan)
    if grid.n != 1:
        from perfsim.errors import InputError

        raise InputError("takes one plan; give single values, not lists", field="plan")
    c = build(grid)
    mode = grid.values("mode")[0]
    moe = bool(np.any(np.asarray(c["experts"]) > 0))
    rows = []
    for phase, p in _passes(c, mode).items():
        for op in [*layer_ops(c, p, moe=moe), *lm_head_ops(c, p)]:
            priced = price(c, [op])
            flops, moved, t = (float(np.asarray(priced[k]).reshape(-1)[0]) for k in ("flops", "hbm_bytes", "total_s"))
            if t <= 0 and moved <= 0:
                continue  # an op this model does not have (MLA projections of a GQA model, ...)
            rows.append({"phase": phase, "op": op.name, "kind": _kind(op), "flops": flops, "bytes": moved,
                         "time_s": t})
    df = pd.DataFrame(rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        df["intensity"] = df["flops"] / df["bytes"]
        df["tflops"] = df["flops"] / df["time_s"] / 1e12
    return df
