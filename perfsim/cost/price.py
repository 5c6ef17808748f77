"""Price op lists from :mod:`perfsim.graph.transformer` with the roofline and collective models.

Returns per-category times (arrays), so every phase can say where its time went.
"""

from __future__ import annotations

import math

import numpy as np

from perfsim.cost import npu
from perfsim.cost.collectives import bus_factor
from perfsim.cost.roofline import dequant_time, gemm_time, op_time, tile_efficiency
from perfsim.cost.topology import group_collective, nic_bytes
from perfsim.graph.transformer import Attention, Comm, Elementwise, Gemm

CATEGORIES = ("gemm_s", "attention_s", "elementwise_s", "communication_s", "launch_s")

#: Fixed costs of a fused attention kernel (FlashAttention-2/3, cuDNN), in keys of steady-state
#: work per query row, forward and backward: ``(per query tile and call, per causal diagonal)``.
#: A call walks each query tile (backward: each key tile) across the key tiles it attends; around
#: that loop it loads the tile, writes its output and log-sum-exp (backward: its key and value
#: gradients, plus the row-sum and gradient-conversion passes), and fills and drains its
#: pipeline, a cost per tile that the loop's length amortises; a causal call also runs one
#: diagonal tile per query tile half-masked. Fitted jointly (a free asymptote per series, the
#: model's wave efficiency divided out; log residuals) to bf16, head dim 128 kernel measurements:
#: cuDNN 9.19 on H200, 2K-32K, causal and not, forward and backward (NVIDIA/cudnn-frontend 3929da2,
#: benchmark/sdpa_benchmark_training/results/h200_919_only_cudnn/llama3.1_20260227_034703.csv;
#: batch 1, 64 query heads), and FlashAttention-2, FlashAttention-3 and cuDNN on H100 SXM5, 512-16K
#: (Shah et al. 2024, 'FlashAttention-3', Sec. 4.1 forward-speed figures, causal and not, and
#: backward-speed figure, no mask; batch x sequence 16K, 16 heads). Forward: 141 and 98 keys
#: (8 series, rms residual 3.6 %, largest +11 % at the shortest length); backward: 356 and 275
#: (5 series, one causal, rms 2.9 %): about one key tile of 128 per query tile forward, under
#: three backward, and half a tile plus a little masking per diagonal.
ATTENTION_TILE_KEYS = {False: (140.0, 100.0), True: (360.0, 280.0)}


def attention_length_eff(span, visits, diagonal, *, backward=False):
    """Share of a fused attention kernel's long-call FLOP rate reached by calls whose query rows
    attend ``span`` keys on average, with ``visits`` calls per query tile and ``diagonal`` 1 for a
    causal call: ``span / (span + visits * per_tile + diagonal * per_diagonal)``
    (:data:`ATTENTION_TILE_KEYS`). A causal call of length L (span (L + 1) / 2) runs at about
    L / (L + 2 (per_tile + per_diagonal)), a bidirectional one at L / (L + per_tile); 1 where
    ``visits`` and ``diagonal`` are 0 (eager attention, decode) or there are no keys."""
    per_tile, per_diagonal = ATTENTION_TILE_KEYS[bool(backward)]
    span = np.asarray(span, dtype=float)
    fixed = np.asarray(visits, dtype=float) * per_tile + np.asarray(diagonal, dtype=float) * per_diagonal
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(span > 0, span / (span + fixed), 1.0)


def decode_fixed_time(c, op, stream_s=0.0):
    """Time (s) a fused decode-attention call takes beyond its launch and its roofline ``stream_s``:
    ``decode_attn_fixed_s + max(units x decode_attn_unit_s / SMs - stream_s, 0)`` where ``op.decode``
    is 1, else 0.

    A paged decode call runs the cache write, the split-KV attention kernel and its combine pass;
    each has a minimum duration (its grid's ramp, the page-table and first-page loads before any
    bandwidth is streamed): the fixed time. Each (sequence, KV head) work unit also pays its own
    setup (query load, block-table walk, partial-result write and reduction) on an SM; with many
    units resident those latencies overlap the streaming of the cache, so the call takes the longer
    of the two, not their sum. Both are runtime keys per architecture family
    (``decode_attention_fixed_us_on``, ``decode_attention_unit_us_on``, and
    ``decode_attention_fp8_*`` over an 8-bit cache), fitted to measured decode-attention tables;
    0 where the runtime gives none."""
    # MLA's absorbed decode (kv_lora > 0) runs the engine's MLA kernels where it gives their figures:
    # every query head of a sequence is its own row of one multi-query call, and its work unit is a
    # (sequence, query head) (its query load, its share of the split-KV partials and their reduction)
    mla_unit = np.asarray(c.get("decode_attn_mla_unit_s", math.nan))
    mla = (np.asarray(c.get("kv_lora", 0.0)) > 0) & np.isfinite(mla_unit)
    unit_s = np.where(mla, mla_unit, c.get("decode_attn_unit_s", 0.0))
    units = np.where(mla, op.units * op.rows, op.units)
    per_unit = unit_s * units / np.maximum(c["units"], 1.0)
    fixed = np.where(mla, c.get("decode_attn_mla_fixed_s", math.nan), c.get("decode_attn_fixed_s", 0.0))
    extra = fixed + np.maximum(per_unit - stream_s, 0.0)
    return np.where(np.asarray(op.decode) > 0, extra, 0.0)


def prefill_call(op, *, backward=False):
    """1 where ``op`` is a fused prefill (or chunked-prefill) attention call of an inference pass:
    fused (``op.visits`` > 0), not decode, not a gradient pass."""
    return (np.asarray(op.visits) > 0) & (np.asarray(op.decode) <= 0) & (not backward)


def prefill_fixed_time(c, op, *, backward=False):
    """Time (s) a fused prefill-attention call takes beyond its launch and its roofline:
    ``prefill_attn_fixed_s + blocks x prefill_attn_tile_s / SMs`` on a prefill call
    (:func:`prefill_call`), else 0.

    A serving engine's prefill call runs the QKV preprocessing (rotary embedding, the paged cache
    write) and the fused attention kernel over the paged cache: each kernel has a minimum duration
    (the fixed time), and each (sequence, query head, 128-row query tile) work unit (``op.blocks``)
    pays its own setup beyond the per-tile key work of :func:`attention_length_eff` (its rows'
    preprocessing and cache write, the block-table walk), spread over the SMs and added to the
    kernel's compute. Both are runtime keys per architecture family
    (``prefill_attention_fixed_us_on``, ``prefill_attention_tile_us_on``), fitted to measured
    prefill-attention tables; 0 where the runtime gives none."""
    per_tile = np.asarray(c.get("prefill_attn_tile_s", 0.0)) * op.blocks / np.maximum(c["units"], 1.0)
    return np.where(prefill_call(op, backward=backward), c.get("prefill_attn_fixed_s", 0.0) + per_tile, 0.0)


def price(c, ops, *, backward=False, weight_grads=True):
    """Sum the time of ``ops`` by category; ``backward`` prices their gradient pass instead.

    Returns
    -------
    dict
        ``gemm_s``, ``attention_s`` (with the engine's decode- and prefill-attention kernels' fixed
        costs: :func:`decode_fixed_time`, :func:`prefill_fixed_time`), ``elementwise_s``,
        ``communication_s``, ``launch_s`` (part of the others, kernel overheads),
        ``compute_bound_s`` / ``memory_bound_s`` (GEMM + attention time split by which roofline
        bound it; elementwise ops are memory-bound), ``memory_compute_s`` (the compute side of the
        memory-bound ops' rooflines: what they would take at a clock too low for memory to bind,
        for the power-cap model), ``wgrad_s`` (weight-gradient GEMMs, backward),
        ``ep_communication_s`` (the expert group's token exchange, all-to-alls or all-gather and
        reduce-scatter, part of ``communication_s``), the busy time of each engine (``matrix_s``,
        ``vector_s``, ``dma_s``: :mod:`perfsim.cost.npu`; counted where the grid holds an NPU/TPU
        or PIM, 0 otherwise), and the work the power model counts: ``flops`` (GEMM and attention;
        GEMMs as the matrix engines execute them, partial output tiles counted whole),
        ``hbm_bytes`` (device-memory traffic; a collective reads what it sends and writes what it
        receives), ``link_bytes`` (bytes each device sends over the fabric, nccl-tests
        bus-bandwidth volume), ``nic_bytes`` (the part of it sent over the device's scale-out NIC:
        :func:`perfsim.cost.topology.nic_bytes`) and ``vector_ops`` (NPU vector engine).
    """
    out = {k: 0.0 for k in (*CATEGORIES, "compute_bound_s", "memory_bound_s", "memory_compute_s", "wgrad_s",
                            "ep_communication_s",
                            "matrix_s", "vector_s", "dma_s", "flops", "hbm_bytes", "link_bytes", "nic_bytes", "vector_ops")}
    systolic = np.asarray(c.get("systolic", 0.0)) > 0  # NPU/TPU rows: ops on their engines
    npu_rows = bool(systolic.any())
    # engine busy times (and the memory time PIM in blocked mode waits for) where anyone reads them
    engines = npu_rows or bool((np.asarray(c.get("has_pim", 0.0)) > 0).any())
    launch = c["launch_s"]
    mem = dict(bandwidth=c["hbm_bw"], memory_eff=c["memory_max"])
    act, wb = c["act_bytes"], c["w_bytes"]
    dequantised = bool((np.asarray(c["dequant"]) > 0).any())  # (elsewhere a conversion time is 0 on every row)
    # an op absent from every row (a zero GEMM dimension, a group of one rank) adds exactly 0 to every
    # sum but the engines' (a GEMM's dequantisation) and those a non-finite bandwidth turns to NaN
    skip_absent = not engines and bool(np.all(np.isfinite(c["hbm_bw"] * c["memory_max"])))
    for op in ops:
        if isinstance(op, Gemm):
            # an engine's fused MoE kernels reach their own share of the GEMM ceiling and of the
            # streaming bandwidth for the expert weights (runtime moe_*_efficiency_on; 1 elsewhere)
            ceiling, memory_eff, peak, w_b16 = c["gemm_max"], c["memory_max"], c["peak_flops"], wb
            if op.expert:
                ceiling = ceiling * c.get("moe_gemm_eff", 1.0)
                memory_eff = memory_eff * c.get("moe_memory_eff", 1.0)
            if (np.asarray(op.wide) > 0).any():  # run in 16 bits in an 8-bit recipe: the 16-bit rate and ceiling
                wide = np.asarray(op.wide) > 0
                ceiling = np.where(wide, c["attn_gemm_max"], ceiling)
                peak = np.where(wide, peak * c["attn_peak_ratio"], peak)
                w_b16 = np.where(wide, act, wb)
            shapes = [(op.m, op.n, op.k, act, w_b16, act)]
            if backward:
                shapes = [(op.m, op.k, op.n, act, w_b16, act)]  # input gradient
                if weight_grads:
                    shapes.append((op.k, op.n, op.m, act, act, w_b16))  # weight gradient
            for i, (m, n, k, a_b, w_b, o_b) in enumerate(shapes):
                if skip_absent and not (np.asarray(2.0 * m * n * k * op.groups) > 0).any():  # gemm_time's flops
                    continue
                eff = npu.device_gemm_efficiency(c, m, n, k, op.groups, ceiling)
                # forward and input-gradient GEMMs read the stored weight and convert it
                deq = (np.where(c["dequant"] > 0, dequant_time(m, n, k, groups=op.groups, tile_m=c["tile_m"],
                                                               vector_flops=c["vector_flops"]), 0.0)
                       if i == 0 and op.weight and dequantised else 0.0)
                # a GPU converts on the SMs that multiply; an NPU on its vector engine, beside the arrays
                serial_deq = np.where(systolic, 0.0, deq) if npu_rows else deq
                t, tc, tm = gemm_time(m, n, k, groups=op.groups, peak_flops=peak, eff=eff,
                                      a_bytes=a_b, w_bytes=w_b, out_bytes=o_b, launch_s=launch,
                                      dequant_s=serial_deq, bandwidth=c["hbm_bw"], memory_eff=memory_eff)
                matrix = tc - serial_deq
                if npu_rows:
                    t = np.where(systolic & (t > 0), np.maximum(t, deq + launch), t)
                    tc = np.where(systolic, np.maximum(tc, deq), tc)
                out["gemm_s"] = out["gemm_s"] + t
                out["launch_s"] = out["launch_s"] + np.where(t > 0, launch, 0.0)
                out["compute_bound_s"] = out["compute_bound_s"] + np.where(tc >= tm, t, 0.0)
                out["memory_bound_s"] = out["memory_bound_s"] + np.where(tc < tm, t, 0.0)
                out["memory_compute_s"] = out["memory_compute_s"] + np.where(tc < tm, tc, 0.0)
                if i == 1:
                    out["wgrad_s"] = out["wgrad_s"] + t
                if engines:
                    out["matrix_s"] = out["matrix_s"] + matrix
                    out["vector_s"] = out["vector_s"] + np.where(t > 0, deq, 0.0)
                    out["dma_s"] = out["dma_s"] + tm
                if npu_rows:
                    out["vector_ops"] = out["vector_ops"] + np.where(systolic & (t > 0), deq * c["vector_flops"], 0.0)
                    tc = np.where(systolic, matrix, tc)  # FLOPs below: the matrix engine's alone
                # FLOPs the matrix engines execute (an absent GEMM, tc == 0, does no work): a GPU's partial tiles do full work (the training
                # step's power counts its FLOPs from the model: backward passes skip this)
                executed = 1.0 if backward else tile_efficiency(m, n, c["tile_m"], c["tile_n"])
                executed = np.where(executed > 0, executed, 1.0)  # no such GEMM: no work either way
                if npu_rows:
                    executed = np.where(systolic, 1.0, executed)
                out["flops"] = out["flops"] + np.where(tc > 0, tc * peak * eff / executed, 0.0)
                out["hbm_bytes"] = out["hbm_bytes"] + tm * c["hbm_bw"] * memory_eff
        elif isinstance(op, Attention):
            scale = 2.5 if backward else 1.0  # FlashAttention-2 backward: 5 matmuls to the forward's 2
            waves = np.ceil(op.blocks / c["units"])
            wave_eff = op.blocks / np.maximum(waves * c["units"], 1.0)
            # a serving engine's prefill kernels reach their own long-call share (prefill_attention_efficiency_on)
            # (at fp8 where the engine runs its context attention in fp8: prefill_attn_peak_ratio, _gemm_max)
            prefill = prefill_call(op, backward=backward)
            share = np.where(prefill, c.get("prefill_attn_eff", c["attention_eff"]), c["attention_eff"])
            gemm_max = np.where(prefill, c.get("prefill_attn_gemm_max", c["attn_gemm_max"]), c["attn_gemm_max"])
            eff = gemm_max * share * np.where(op.blocks > 0, wave_eff, 1.0)
            eff = eff * attention_length_eff(op.span, op.visits, op.diagonal, backward=backward)
            vec = 0.0
            if npu_rows:  # matmuls on the systolic arrays, softmax on the vector engine
                arrays = npu.attention_efficiency(op.rows, op.depth, op.span, op.units, arrays=c["arrays"],
                                                  size=c["array_size"], weight_stationary=c["weight_stationary"] > 0)
                eff = np.where(systolic, c["attn_gemm_max"] * c["attention_eff"] * arrays, eff)
                vec = np.where(systolic, npu.vector_time(npu.SOFTMAX_OPS * op.scores * scale, c["vector_flops"]), 0.0)
            if backward:  # the gradient kernel's own rate (FlashAttention-3, cuDNN: below the forward's)
                eff = eff * c["attention_bwd_ratio"]
            peak = c["peak_flops"] * np.where(prefill, c.get("prefill_attn_peak_ratio", c["attn_peak_ratio"]),
                                              c["attn_peak_ratio"])
            t = op_time(op.flops * scale, op.moved_bytes * (2.0 if backward else 1.0), peak_flops=peak,
                        compute_eff=eff, launch_s=launch, **mem)
            tc = op.flops * scale / (peak * eff)
            if npu_rows:
                t = np.where(t > 0, np.maximum(t, vec + launch), 0.0)
                tc = np.maximum(tc, vec)
            if engines:
                tm = op.moved_bytes * (2.0 if backward else 1.0) / (c["hbm_bw"] * c["memory_max"])
                out["matrix_s"] = out["matrix_s"] + np.where(t > 0, op.flops * scale / (peak * eff), 0.0)
                out["vector_s"] = out["vector_s"] + vec
                out["vector_ops"] = out["vector_ops"] + np.where(systolic, npu.SOFTMAX_OPS * op.scores * scale, 0.0)
                out["dma_s"] = out["dma_s"] + np.where(t > 0, tm, 0.0)
            fixed = np.where(t > 0, decode_fixed_time(c, op, t - launch) + prefill_fixed_time(c, op, backward=backward),
                             0.0)
            out["attention_s"] = out["attention_s"] + t + fixed
            out["launch_s"] = out["launch_s"] + np.where(t > 0, launch, 0.0)
            out["compute_bound_s"] = out["compute_bound_s"] + np.where(tc >= t - launch, t + fixed, 0.0)
            out["memory_bound_s"] = out["memory_bound_s"] + np.where(tc < t - launch, t + fixed, 0.0)
            out["memory_compute_s"] = out["memory_compute_s"] + np.where(tc < t - launch, tc, 0.0)
            out["flops"] = out["flops"] + op.flops * scale
            out["hbm_bytes"] = out["hbm_bytes"] + op.moved_bytes * (2.0 if backward else 1.0)
        elif isinstance(op, Elementwise):
            kernels, moved = op.kernels, op.moved_bytes
            if backward:  # twice the forward's, or the op's own gradient traffic
                kernels = kernels * 2.0 if op.backward_kernels is None else op.backward_kernels
                moved = moved * 2.0 if op.backward_bytes is None else op.backward_bytes
            t = op_time(0.0, moved, peak_flops=1.0, compute_eff=1.0, launch_s=launch, kernels=kernels, **mem)
            if engines:
                out["dma_s"] = out["dma_s"] + np.where(t > 0, moved / (c["hbm_bw"] * c["memory_max"]), 0.0)
            if npu_rows:  # the vector engine streams every element once
                ops = np.where(systolic, npu.ELEMENTWISE_OPS * moved / c["act_bytes"], 0.0)
                vec = npu.vector_time(ops, c["vector_flops"])
                t = np.where(t > 0, np.maximum(t, vec + kernels * launch), 0.0)
                out["vector_s"] = out["vector_s"] + vec
                out["vector_ops"] = out["vector_ops"] + ops
            out["elementwise_s"] = out["elementwise_s"] + t
            out["launch_s"] = out["launch_s"] + np.where(t > 0, kernels * launch, 0.0)
            out["memory_bound_s"] = out["memory_bound_s"] + t
            out["hbm_bytes"] = out["hbm_bytes"] + moved
        elif isinstance(op, Comm):
            if not (np.asarray(op.ranks) > 1).any():  # no one to talk to: no time, no bytes
                t = 0.0 * (1.0 - c["tp_overlap"])
                out["communication_s"] = out["communication_s"] + t
                if op.name.startswith("ep_"):
                    out["ep_communication_s"] = out["ep_communication_s"] + t
                continue
            t = group_collective(c, op.op, op.size_bytes, op.ranks) * (1.0 - c["tp_overlap"])
            out["communication_s"] = out["communication_s"] + t
            if op.name.startswith("ep_"):
                out["ep_communication_s"] = out["ep_communication_s"] + t
            sent = np.where(np.asarray(op.ranks) > 1, op.size_bytes * bus_factor(op.op, op.ranks), 0.0)
            out["link_bytes"] = out["link_bytes"] + sent
            out["nic_bytes"] = out["nic_bytes"] + nic_bytes(c, op.op, op.size_bytes, op.ranks)
            out["hbm_bytes"] = out["hbm_bytes"] + 2.0 * sent
    out["total_s"] = out["gemm_s"] + out["attention_s"] + out["elementwise_s"] + out["communication_s"]
    return out


def combine(*terms):
    """Weighted sum of price dicts: ``combine((w1, d1), (w2, d2), ...)``."""
    keys = dict.fromkeys(k for _, d in terms for k in d)
    return {k: sum(w * d.get(k, 0.0) for w, d in terms) for k in keys}
