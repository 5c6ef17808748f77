"""How a layer's weight matrices are split over the tensor-parallel ranks, and the collectives that follow.

1D (``weight_layout: 1d``, Megatron-LM): every weight matrix is split along its heads or feed-forward
dimension over all ``tp`` ranks; the activations between the blocks are whole on every rank and each
block ends in one all-reduce of the block's output (``tokens x d_model``).

2D weight-stationary (``weight_layout: 2d``): Pope et al., "Efficiently Scaling Transformer Inference"
(MLSys 2023, arXiv 2211.05102), Sec. 3.2: the ranks form an ``X x YZ`` grid; every ``d_model x width``
matrix is split ``X`` ways along ``d_model`` and ``YZ`` ways along its width, so each rank holds a
near-square ``1/tp`` of it, and the activations between the blocks stay split over all ranks. A block
(the attention projections, or the feed-forward layer; one fused block with PaLM's parallel block)
then gathers its input over ``YZ`` (``tokens x d_model / X`` each), multiplies by its input matrices,
reduce-scatters the partial sums over ``X`` (``tokens x width_in / YZ``), gathers them back over
``X`` before its output matrices (``tokens x width_out / YZ``) and reduce-scatters its output over
``YZ`` (``tokens x d_model / X``): four collectives whose volumes fall as ``1/X`` and ``1/YZ`` where the
1D all-reduce's does not fall with ``tp``. The authors' code (google-research/google-research
scaling_transformer_inference_efficiency/layers/two_d_parallel_xmap.py @ 8d8a4f1b,
``_transformer_layer_weight_stationary`` and ``allgather_layernorm``) runs the same four around each
layer, and a fifth: the input norm's mean square, summed over the ``X`` ranks that split ``d_model``
(``lax.pmean`` over 'x', one fp32 value per token).

``X`` takes the volume's optimum, ``X = sqrt(2 tp d_model / (width_in + width_out))`` over the layer's
matrices (Pope et al.'s ``X = sqrt(n d_model / d_ff)`` for a plain feed-forward layer: 4 x 16 on 64
chips for PaLM 540B, the authors' 4 x 4 x 4 mesh), rounded to a power of two that divides ``tp``.
Each rank's matrices hold the same weights and FLOPs as in 1D (a ``1/tp`` share), so the GEMMs are
priced as 1D's; the attention core keeps its heads (or batch) layout; a MoE layer's experts keep their
own collectives. Every collective is priced after its matmul: the authors' code runs the two over
``X`` inside their matmuls (``collectives.matmul_reducescatter_*`` into ``q_wi``,
``collectives.allgather_matmul_*`` into ``o_wo``), overlapped with the weight reads, which this sum
does not credit, so on a torus, where a group over the one axis of ``X`` gets that axis's links only,
2D reads slower than it runs at small chip counts. Hugging Face configs do not state the layout: it
is a plan choice, ``1d`` by default.
"""

from __future__ import annotations

import numpy as np

from perfsim.plan.rows import any_row, maximum, minimum, where_one

#: bytes of the norm's per-token statistic (fp32) summed over the ranks that split d_model
_NORM_BYTES = 4.0


def two_d(c):
    """1 where the plan lays the weights out 2D weight-stationary (``weight_layout`` 2d), else 0
    (hand-made column sets without the column: 1D)."""
    return c.get("weights_2d", 0.0)


def _widths(c):
    """``(attention in, attention out, feed-forward in, feed-forward out)`` widths of a layer's weight
    matrices: the fused query/key/value projection and the output projection, the feed-forward
    layer's input (gate and up when gated) and output matrices."""
    hd = c["head_dim"]
    return (c["heads"] + 2.0 * c["kv_heads"]) * hd, c["heads"] * hd, (1.0 + c["gated"]) * c["ffn"], c["ffn"]


def attention_widths(c):
    """``(width_in, width_out)`` of the attention block; with PaLM's parallel block the feed-forward
    matrices join it (one fused block, ``q_wi`` and ``o_wo`` in the authors' code)."""
    a_in, a_out, f_in, f_out = _widths(c)
    return a_in + c["parallel_block"] * f_in, a_out + c["parallel_block"] * f_out


def mlp_widths(c):
    """``(width_in, width_out)`` of the feed-forward block."""
    return _widths(c)[2:]


def grid_x(c):
    """``X`` of the ``X x YZ`` grid: the power of two nearest (in log) to the volume's optimum
    ``sqrt(2 tp d_model / (width_in + width_out))``, at most ``tp``, and dividing it."""
    tp = maximum(c["tp"], 1.0)
    a_in, a_out, f_in, f_out = _widths(c)
    width_in, width_out = a_in + f_in, a_out + f_out
    best = np.sqrt(2.0 * tp * c["hidden"] / maximum(width_in + width_out, 1.0))
    x = minimum(np.exp2(np.round(np.log2(maximum(best, 1.0)))), tp)
    return np.gcd(np.asarray(np.round(tp), dtype=np.int64), np.asarray(x, dtype=np.int64)).astype(float)


def block_comms(c, tokens, name, reduced, width_in, width_out):
    """``(name, op, bytes, ranks)`` of the collectives of a block of ``tokens`` tokens: 1D, the
    all-reduce of ``reduced`` bytes (the block's output; 0 where the block ends in none, the
    feed-forward half of a parallel block) over ``tp``; 2D, the four of the module docstring and the
    norm's, for a block whose matrices are ``width_in`` and ``width_out`` wide (0 bytes where the
    block is 1D or ``reduced`` is 0)."""
    tp = c["tp"]
    layout = two_d(c)
    if not any_row(layout > 0):  # 1D on every row: the all-reduce alone
        return [(name, "all_reduce", reduced, tp)]
    on = (layout > 0) & (reduced > 0)
    x = grid_x(c)
    yz = tp / x
    act = c["act_bytes"]
    edge = where_one(on, tokens * c["hidden"] * act / x, 0.0)
    return [
        (name, "all_reduce", where_one(layout > 0, 0.0, reduced), tp),
        (name + "_in_all_gather", "all_gather", edge, yz),
        (name + "_norm_all_reduce", "all_reduce", where_one(on, tokens * _NORM_BYTES, 0.0), x),
        (name + "_in_reduce_scatter", "reduce_scatter", where_one(on, tokens * width_in * act / yz, 0.0), x),
        (name + "_out_all_gather", "all_gather", where_one(on, tokens * width_out * act / yz, 0.0), x),
        (name + "_out_reduce_scatter", "reduce_scatter", edge, yz),
    ]
