"""Price op lists from :mod:`perfsim.graph.transformer` with the roofline and collective models.

Returns per-category times (arrays), so every phase can say where its time went.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from perfsim.cost import npu
from perfsim.cost.collectives import bus_factor
from perfsim.cost.op_order import broadcast_shape, run_sums, sum_in_op_order, weighted_sum
from perfsim.cost.roofline import dequant_time, gemm_time, op_time
from perfsim.cost.topology import collective_and_nic
from perfsim.graph.transformer import Attention, Comm, Elementwise, Gemm
from perfsim.plan.rows import any_row, floats, maximum, numeric, where_one

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
    span = floats(span)
    fixed = floats(visits) * per_tile + floats(diagonal) * per_diagonal
    with np.errstate(divide="ignore", invalid="ignore"):
        return where_one(span > 0, span / (span + fixed), 1.0)


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
    mla_unit = numeric(c.get("decode_attn_mla_unit_s", math.nan))
    mla = (numeric(c.get("kv_lora", 0.0)) > 0) & np.isfinite(mla_unit)
    unit_s = where_one(mla, mla_unit, c.get("decode_attn_unit_s", 0.0))
    units = where_one(mla, op.units * op.rows, op.units)
    per_unit = unit_s * units / maximum(c["units"], 1.0)
    fixed = where_one(mla, c.get("decode_attn_mla_fixed_s", math.nan), c.get("decode_attn_fixed_s", 0.0))
    extra = fixed + maximum(per_unit - stream_s, 0.0)
    return where_one(numeric(op.decode) > 0, extra, 0.0)


def prefill_call(op, *, backward=False):
    """1 where ``op`` is a fused prefill (or chunked-prefill) attention call of an inference pass:
    fused (``op.visits`` > 0), not decode, not a gradient pass."""
    return (numeric(op.visits) > 0) & (numeric(op.decode) <= 0) & (not backward)


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
    per_tile = numeric(c.get("prefill_attn_tile_s", 0.0)) * op.blocks / maximum(c["units"], 1.0)
    return where_one(prefill_call(op, backward=backward), c.get("prefill_attn_fixed_s", 0.0) + per_tile, 0.0)


#: every column the GEMM, elementwise and collective terms read (:func:`_gemm_cost`,
#: :func:`_elementwise_cost`, :func:`_comm_cost` and the cost models they call); where each holds
#: one number (one configuration) and so do the ops' fields, the ops of a kind are priced together
#: on a leading op axis (:func:`price`)
_PRICED_COLUMNS = ("gemm_max", "memory_max", "peak_flops", "moe_gemm_eff", "moe_memory_eff", "wide_gemm_max",
                   "gemm_stream_s", "walk_fixed_s", "walk_k_s", "block_gemm_eff", "attn_peak_ratio",
                   "act_bytes", "w_bytes", "tile_m", "tile_n", "tile_reuse", "units", "hbm_bw", "dequant",
                   "vector_flops", "launch_s", "systolic", "has_pim", "arrays", "array_size", "weight_stationary",
                   "tp_overlap", "scaleup_base_s", "scaleup_domain", "torus_dims", "torus_wrap", "num_devices", "devices_per_node",
                   "nvls_eff", "nvls_lat_s", "package_bw", "package_devices", "scaleout_bw", "scaleout_eff", "scaleout_lat_s",
                   "scaleout_ll_s", "scaleup_bw", "scaleup_eff", "scaleup_lat_s", "scaleup_ll_s", "custom_ar_max",
                   "custom_ar_max_tp2", "custom_ar_lat_s", "custom_ar_eff")
#: elements of an op field up to which ops are stacked (one configuration, or the two passes of one)
_STACK_MAX = 16


class _Setting:
    """What every op of one :func:`price` call shares: the engines the rows run on, the launch cost."""

    def __init__(self, c, backward, weight_grads):
        self.backward, self.weight_grads = backward, weight_grads
        self.systolic = numeric(c.get("systolic", 0.0)) > 0  # NPU/TPU rows: ops on their engines
        self.npu_rows = any_row(self.systolic)
        # engine busy times (and the memory time PIM in blocked mode waits for) where anyone reads them
        self.engines = self.npu_rows or any_row(numeric(c.get("has_pim", 0.0)) > 0)
        self.launch = c["launch_s"]
        self.mem = dict(bandwidth=c["hbm_bw"], memory_eff=c["memory_max"])
        self.dequantised = any_row(numeric(c["dequant"]) > 0)  # (elsewhere a conversion time is 0 on every row)
        # an op absent from every row (a zero GEMM dimension, a group of one rank) adds exactly 0 to every
        # sum but the engines' (a GEMM's dequantisation) and those a non-finite bandwidth turns to NaN
        self.skip_absent = not self.engines and bool(np.isfinite(c["hbm_bw"] * c["memory_max"]).all())
        # whether any row's engine walks K one output tile per SM (walk_k_s: :func:`_gemm_cost`)
        self.walks = any_row(numeric(c.get("walk_k_s", 0.0)) > 0)
        self.ceilings = None  # (dense GEMM ceiling, expert GEMM ceiling, expert memory share): :func:`_gemm_shapes`


def _gemm_shapes(c, op, x):
    """The GEMMs ``op`` runs: ``(m, n, k, groups, a_bytes, w_bytes, out_bytes, ceiling, memory_eff, stream_s,
    peak, dequantises, weight_gradient, m_sd)`` each (the forward's, or the input and weight gradients')."""
    # a dense GEMM's operand stream takes a fixed pipeline fill and drain (gemm_stream_s) beyond its
    # bytes; an engine's fused MoE kernels reach their own share of the GEMM ceiling and of the
    # streaming bandwidth for the expert weights (runtime moe_*_efficiency_on, fitted to whole
    # measured MoE ops: no separate fill time; 1 elsewhere)
    act, wb = c["act_bytes"], c["w_bytes"]
    peak, w_b16 = c["peak_flops"], wb
    if x.ceilings is None:  # (the same for every GEMM of the call: taken once)
        x.ceilings = (c["gemm_max"] * c.get("block_gemm_eff", 1.0), c["gemm_max"] * c.get("moe_gemm_eff", 1.0),
                      c["memory_max"] * c.get("moe_memory_eff", 1.0))
    if op.expert:
        ceiling, memory_eff, stream = x.ceilings[1], x.ceilings[2], 0.0
    else:  # (block-scale promotion: the engine's fp8 block-scaled kernels' share, runtime fp8_block_gemm_efficiency_on)
        ceiling, memory_eff, stream = x.ceilings[0], c["memory_max"], c.get("gemm_stream_s", 0.0)
    if not (isinstance(op.wide, float) and op.wide <= 0.0) and any_row(np.asarray(op.wide) > 0):  # run in 16 bits in an 8-bit recipe: the 16-bit rate and ceiling
        wide = np.asarray(op.wide) > 0
        ceiling = np.where(wide, c["wide_gemm_max"], ceiling)
        peak = np.where(wide, peak * c["attn_peak_ratio"], peak)
        w_b16 = np.where(wide, act, wb)
    # forward and input-gradient GEMMs read the stored weight and convert it
    deq = bool(op.weight and x.dequantised)
    if not x.backward:
        # the engine's block-scaled dense GEMMs walk K one output tile per SM (walk_k_s: :func:`_gemm_cost`)
        walk, per_k = 0.0, c.get("walk_k_s", 0.0)
        if not op.expert and x.walks:
            on = (np.asarray(op.wide) <= 0) & (per_k > 0)
            walk = np.where(on, per_k, 0.0) if any_row(on) else 0.0
        return [(op.m, op.n, op.k, op.groups, act, w_b16, act, ceiling, memory_eff, stream, peak, deq, False, op.m_sd,
                 walk)]
    shapes = [(op.m, op.k, op.n, op.groups, act, w_b16, act, ceiling, memory_eff, stream, peak, deq, False, op.m_sd)]  # input gradient
    if x.weight_grads:  # (its rows are the weight's: the spread tokens are its reduction)
        shapes.append((op.k, op.n, op.m, op.groups, act, act, w_b16, ceiling, memory_eff, stream, peak, False, True, 0.0))
    return shapes


def _gemm_cost(c, x, m, n, k, groups, a_b, w_b, o_b, ceiling, memory_eff, stream, peak, deq_on, wgrad, m_sd=0.0,
               walk=0.0, backward=None):
    """The :func:`price` terms of GEMMs (one, or several on a leading axis).

    ``backward``: whether each GEMM belongs to the gradient pass, where forward and gradient GEMMs
    are stacked together (flags on the leading axis); ``x.backward`` for all of them where not given.

    ``walk``: where the engine's kernel gives every output tile (``tile_m`` x ``tile_n``) one SM
    that walks all of K (no split-K), a GEMM whose tiles fit on the SMs at once takes at least
    a fixed ``walk_fixed_s`` beyond its launch plus ``walk`` seconds per element of K, whatever
    its M and N (TensorRT-LLM's nvfp4 and fp8 block-scaled Linear at small M: runtimes/trt-llm.yaml)."""
    # (and the useful share of the work the chosen tiles execute; a training step's power counts model FLOPs;
    # the one tile's output tiles are taken there only where some row runs it)
    passes = bool(x.backward) if backward is None else backward
    if passes is True:
        eff, useful = npu.device_gemm_efficiency(c, m, n, k, groups, ceiling, m_sd), 1.0
    else:
        eff, useful = npu.device_gemm_efficiency(c, m, n, k, groups, ceiling, m_sd, share=True)
        if passes is not False:  # (flags of stacked GEMMs of both passes: the gradient's count model FLOPs)
            useful = np.where(passes, 1.0, useful)
    deq = (np.where(deq_on & (c["dequant"] > 0), dequant_time(m, n, k, groups=groups, tile_m=c["tile_m"],
                                                               vector_flops=c["vector_flops"]), 0.0)
           if x.dequantised else 0.0)
    # a GPU converts on the SMs that multiply; an NPU on its vector engine, beside the arrays
    serial_deq = np.where(x.systolic, 0.0, deq) if x.npu_rows else deq
    launch = x.launch
    t, tc, tm = gemm_time(m, n, k, groups=groups, peak_flops=peak, eff=eff, a_bytes=a_b, w_bytes=w_b,
                          out_bytes=o_b, launch_s=launch, dequant_s=serial_deq, bandwidth=c["hbm_bw"],
                          memory_eff=memory_eff, stream_s=stream)
    if any_row(np.asarray(walk) > 0):
        tiles = np.ceil(m / c["tile_m"]) * np.ceil(n / c["tile_n"]) * groups
        floor = launch + c["walk_fixed_s"] + walk * k
        t = np.where((t > 0) & (walk > 0) & (tiles <= c["units"]), np.maximum(t, floor), t)
    matrix = tc - serial_deq
    if x.npu_rows:
        t = np.where(x.systolic & (t > 0), np.maximum(t, deq + launch), t)
        tc = np.where(x.systolic, np.maximum(tc, deq), tc)
    out = {"gemm_s": t, "launch_s": np.where(t > 0, launch, 0.0), "compute_bound_s": np.where(tc >= tm, t, 0.0),
           "memory_bound_s": np.where(tc < tm, t, 0.0), "memory_compute_s": np.where(tc < tm, tc, 0.0)}
    if wgrad is True or (wgrad is not False and passes is not False and x.weight_grads):  # (flags of stacked GEMMs)
        out["wgrad_s"] = t if wgrad is True else np.where(wgrad, t, 0.0)
    if x.engines:
        out.update(matrix_s=matrix, vector_s=np.where(t > 0, deq, 0.0), dma_s=tm)
    if x.npu_rows:
        out["vector_ops"] = np.where(x.systolic & (t > 0), deq * c["vector_flops"], 0.0)
        tc = np.where(x.systolic, matrix, tc)  # FLOPs below: the matrix engine's alone
    # FLOPs the matrix engines execute (an absent GEMM, tc == 0, does no work): the partial tiles of the CTA tile
    # the GEMM was priced with do full work (the training step's power counts its FLOPs from the model: backward
    # passes skip this)
    executed = np.where(useful > 0, useful, 1.0)  # no such GEMM: no work either way
    if x.npu_rows:
        executed = np.where(x.systolic, 1.0, executed)
    out["flops"] = np.where(tc > 0, tc * peak * eff / executed, 0.0)
    out["hbm_bytes"] = np.where(tm > 0, tm - stream, 0.0) * c["hbm_bw"] * memory_eff  # (the fill moves nothing)
    return out


def _attention_cost(c, x, op):
    """The :func:`price` terms of one attention core."""
    backward, launch, systolic = x.backward, x.launch, x.systolic
    out = {}
    scale = 2.5 if backward else 1.0  # FlashAttention-2 backward: 5 matmuls to the forward's 2
    waves = np.ceil(op.blocks / c["units"])
    wave_eff = op.blocks / maximum(waves * c["units"], 1.0)
    # a serving engine's prefill kernels reach their own long-call share (prefill_attention_efficiency_on)
    # (at fp8 where the engine runs its context attention in fp8: prefill_attn_peak_ratio, _gemm_max)
    prefill = prefill_call(op, backward=backward)
    share = where_one(prefill, c.get("prefill_attn_eff", c["attention_eff"]), c["attention_eff"])
    gemm_max = where_one(prefill, c.get("prefill_attn_gemm_max", c["attn_gemm_max"]), c["attn_gemm_max"])
    eff = gemm_max * share * where_one(op.blocks > 0, wave_eff, 1.0)
    eff = eff * attention_length_eff(op.span, op.visits, op.diagonal, backward=backward)
    vec = 0.0
    if x.npu_rows:  # matmuls on the systolic arrays, softmax on the vector engine
        arrays = npu.attention_efficiency(op.rows, op.depth, op.span, op.units, arrays=c["arrays"],
                                          size=c["array_size"], weight_stationary=c["weight_stationary"] > 0)
        eff = np.where(systolic, c["attn_gemm_max"] * c["attention_eff"] * arrays, eff)
        vec = np.where(systolic, npu.vector_time(npu.SOFTMAX_OPS * op.scores * scale, c["vector_flops"]), 0.0)
    if backward:  # the gradient kernel's own rate (FlashAttention-3, cuDNN: below the forward's)
        eff = eff * c["attention_bwd_ratio"]
    peak = c["peak_flops"] * where_one(prefill, c.get("prefill_attn_peak_ratio", c["attn_peak_ratio"]),
                                      c["attn_peak_ratio"])
    t = op_time(op.flops * scale, op.moved_bytes * (2.0 if backward else 1.0), peak_flops=peak,
                compute_eff=eff, launch_s=launch, **x.mem)
    tc = op.flops * scale / (peak * eff)
    if x.npu_rows:
        t = np.where(t > 0, np.maximum(t, vec + launch), 0.0)
        tc = np.maximum(tc, vec)
    if x.engines:
        tm = op.moved_bytes * (2.0 if backward else 1.0) / (c["hbm_bw"] * c["memory_max"])
        out["matrix_s"] = np.where(t > 0, op.flops * scale / (peak * eff), 0.0)
        out["vector_s"] = vec
        out["vector_ops"] = np.where(systolic, npu.SOFTMAX_OPS * op.scores * scale, 0.0)
        out["dma_s"] = np.where(t > 0, tm, 0.0)
    fixed = where_one(t > 0, decode_fixed_time(c, op, t - launch) + prefill_fixed_time(c, op, backward=backward), 0.0)
    out["attention_s"] = t + fixed
    out["launch_s"] = where_one(t > 0, launch, 0.0)
    out["compute_bound_s"] = where_one(tc >= t - launch, t + fixed, 0.0)
    out["memory_bound_s"] = where_one(tc < t - launch, t + fixed, 0.0)
    out["memory_compute_s"] = where_one(tc < t - launch, tc, 0.0)
    out["flops"] = op.flops * scale
    out["hbm_bytes"] = op.moved_bytes * (2.0 if backward else 1.0)
    return out


def _elementwise_fields(op, x):
    """``(kernels, moved_bytes)`` of an elementwise op; ``backward``: twice the forward's, or the
    op's own gradient traffic."""
    if not x.backward:
        return (op.kernels, op.moved_bytes)
    return (op.kernels * 2.0 if op.backward_kernels is None else op.backward_kernels,
            op.moved_bytes * 2.0 if op.backward_bytes is None else op.backward_bytes)


def _elementwise_cost(c, x, kernels, moved):
    """The :func:`price` terms of memory-bound elementwise ops (one, or several on a leading axis)."""
    launch = x.launch
    t = op_time(0.0, moved, peak_flops=1.0, compute_eff=1.0, launch_s=launch, kernels=kernels, **x.mem)
    out = {}
    if x.engines:
        out["dma_s"] = np.where(t > 0, moved / (c["hbm_bw"] * c["memory_max"]), 0.0)
    if x.npu_rows:  # the vector engine streams every element once
        ops = np.where(x.systolic, npu.ELEMENTWISE_OPS * moved / c["act_bytes"], 0.0)
        vec = npu.vector_time(ops, c["vector_flops"])
        t = np.where(t > 0, np.maximum(t, vec + kernels * launch), 0.0)
        out["vector_s"] = vec
        out["vector_ops"] = ops
    out.update(elementwise_s=t, launch_s=np.where(t > 0, kernels * launch, 0.0), memory_bound_s=t,
               hbm_bytes=moved)
    return out


def _comm_cost(c, x, op, size, ranks, expert):
    """The :func:`price` terms of collectives ``op`` (one, or several on a leading axis)."""
    t, nic = collective_and_nic(c, op, size, ranks)
    t = t * (1.0 - c["tp_overlap"])
    sent = np.where(numeric(ranks) > 1, size * bus_factor(op, ranks), 0.0)
    out = {"communication_s": t, "link_bytes": sent, "nic_bytes": nic, "hbm_bytes": 2.0 * sent}
    if expert is not False:  # the expert group's token exchange, all-to-alls or all-gather and reduce-scatter
        out["ep_communication_s"] = t if expert is True else np.where(expert, t, 0.0)
    return out


def _stackable(c, fields) -> int | None:
    """Dimensions (0 or 1) of the op fields where the ops of one kind can be priced together on a
    leading axis: every column :func:`price` reads holds one number and every field at most
    :data:`_STACK_MAX`; None otherwise (a block of a sweep: each op on its own arrays)."""
    get = c.get
    for key in _PRICED_COLUMNS:  # (a loop: this runs on every price call)
        if getattr(get(key), "ndim", 0):
            return None
    dims = 0
    for v in fields:
        nd = getattr(v, "ndim", 0)
        if nd:
            if nd > 1 or v.size > _STACK_MAX:
                return None
            dims = 1
    return dims


def _zero_dimension(op) -> bool:
    """Whether a GEMM has a dimension that is a number 0 (a dense model's MLA GEMMs): its FLOPs are 0 (or
    NaN) on every row, the GEMMs :func:`price_segments` leaves out; adding an absent op's terms leaves
    every sum as it is (a sum from +0 is never -0), so leaving it out gives the same bits."""
    for value in (op.m, op.n, op.k, op.groups):
        if value.__class__ in _NUMBERS and value == 0.0:
            return True
    return False


#: the classes of one number (a configuration's op fields), read without a NumPy call
_NUMBERS = (float, np.float64)


def _stack(values, dims):
    """``values`` (numbers, or arrays of one length) on a new leading axis, in front of ``dims`` axes."""
    if not dims:
        return np.array(values, dtype=float)
    length = max(getattr(v, "size", 1) if getattr(v, "ndim", 0) else 1 for v in values)
    if length == 1 and not any(getattr(v, "ndim", 0) for v in values):
        return np.array(values, dtype=float).reshape(len(values), 1)  # numbers: broadcast along the rows
    stacked = np.empty((len(values), length))
    for i, value in enumerate(values):  # (numbers broadcast along the row)
        stacked[i] = value
    return stacked


def _item_terms(cost, c, x, items, dims, *shared):
    """``cost``'s terms of ``items`` (tuples of its arguments after ``shared``): of one item, its dict;
    of several, computed in one call on the items stacked along a leading axis (one more than
    ``dims``), ``(keys, terms)`` with ``terms[j, i]`` item ``i``'s term ``keys[j]``."""
    if len(items) == 1:
        return cost(c, x, *shared, *items[0])
    columns = []
    for i, values in enumerate(zip(*items, strict=True)):
        first = values[0]
        if isinstance(first, bool):
            flags = np.array(values, dtype=bool)
            columns.append(flags.reshape(len(values), 1) if dims else flags)
        elif i and all(v is first for v in values):  # the same for every item: broadcast
            columns.append(first)
        else:  # (the first argument always: the terms' leading axis)
            columns.append(_stack(values, dims))
    terms = cost(c, x, *shared, *columns)
    # a term that is the same for every item (not stacked) counts once per item, as one call per item adds it
    block = np.empty((len(terms), *broadcast_shape({getattr(value, "shape", ()) for value in terms.values()})))
    for j, value in enumerate(terms.values()):
        block[j] = value
    return tuple(terms), block


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
    return price_segments(c, [ops], backward=backward, weight_grads=weight_grads)[0]


def price_segments(c, segments, *, backward=False, weight_grads=True, weights=None):
    """:func:`price` of each op list of ``segments`` in one call: a list of its dicts, each the
    same, bit for bit, as that list priced alone; with ``weights`` (a number per list) their
    :func:`combine` instead. ``backward``: a flag for every list, or a list of flags, one per list
    (a training step's forward and gradient passes in one call). Where one configuration is
    priced, the ops of a kind are priced together across the lists (fewer NumPy calls), each list
    summed in its own op order (:mod:`perfsim.cost.op_order`), and the lists weighted and added in
    one call."""
    passes = [bool(b) for b in backward] if isinstance(backward, (list, tuple)) else [bool(backward)] * len(segments)
    settings = {False: _Setting(c, False, weight_grads)}
    if any(passes):
        settings[True] = copy.copy(settings[False])
        settings[True].backward = True
    x = settings[False]
    both = len(settings) > 1  # (the passes' GEMMs then carry their pass: _gemm_cost's backward flags)
    items, bounds = [], []  # (cost, its leading arguments, one op's (or GEMM's) arguments, the pass), in op order
    for ops, back in zip(segments, passes, strict=True):
        first = len(items) + 1
        xs = settings[back]
        for op in ops:
            if isinstance(op, Gemm):
                if not (xs.skip_absent and _zero_dimension(op)):  # (skipped: see _zero_dimension)
                    items += [(_gemm_cost, (), (*shape, *((0.0,) if back else ()), back) if both else shape, xs)
                              for shape in _gemm_shapes(c, op, xs)]
            elif isinstance(op, Attention):
                items.append((_attention_cost, (op,), (), xs))
            elif isinstance(op, Elementwise):
                fields = _elementwise_fields(op, xs)  # (none moved: its terms are +0 or -0, left out)
                if not (xs.skip_absent and fields[1].__class__ in _NUMBERS and fields[1] == 0.0):
                    items.append((_elementwise_cost, (), fields, xs))
            elif isinstance(op, Comm):
                size = op.size_bytes if not back or op.backward_size is None else op.backward_size
                # no one to talk to, or nothing to send on any row: no time, no bytes
                if not any_row(numeric(op.ranks) > 1) or not any_row(numeric(size) != 0.0):
                    items.append((None, (op.name.startswith("ep_"),), (), xs))
                else:
                    items.append((_comm_cost, (op.op,), (size, op.ranks, op.name.startswith("ep_")), xs))
        bounds.append((first, len(items)))
    outs = [{k: 0.0 for k in (*CATEGORIES, "compute_bound_s", "memory_bound_s", "memory_compute_s", "wgrad_s",
                              "ep_communication_s", "matrix_s", "vector_s", "dma_s", "flops", "hbm_bytes",
                              "link_bytes", "nic_bytes", "vector_ops")} for _ in segments]
    dims = _stackable(c, [v for cost, _, item, _ in items if cost is not _attention_cost
                          for v in (*item[:4], *item[12:]) if not isinstance(v, bool)])
    groups: dict = {}  # one configuration: the ops of a kind priced together (where a kind has several)
    # (the elementwise and collective terms and, given their pass, the GEMMs' read no pass of the setting)
    for position, (cost, shared, item, _) in enumerate(items, start=1):  # (row 0 of the sums: zeros)
        if dims is not None and cost is not None and cost is not _attention_cost:
            groups.setdefault((cost, shared), []).append((position, item))
    if any(len(group) > 1 for group in groups.values()):  # every sum still in op order
        parts = []
        for position, (cost, shared, item, xs) in enumerate(items, start=1):
            if cost is None:  # a collective of one rank
                t = 0.0 * (1.0 - c["tp_overlap"])
                parts.append((position, {"communication_s": t, **({"ep_communication_s": t} if shared[0] else {})}))
            elif cost is _attention_cost:
                parts.append((position, cost(c, xs, *shared, *item)))
        for (cost, shared), group in groups.items():
            positions = [position for position, _ in group]
            parts.append((positions if len(group) > 1 else positions[0],
                          _item_terms(cost, c, x, [item for _, item in group], dims, *shared)))
        if weights is not None and len(segments) > 1 and not any(np.ndim(w) for w in weights):
            return _combined(outs[0], *run_sums(parts, len(items), bounds), weights)
        if len(segments) == 1:
            outs[0].update(sum_in_op_order(parts, len(items)))
        else:
            for out, sums in zip(outs, sum_in_op_order(parts, len(items), bounds), strict=True):
                out.update(sums)
    else:  # a block of a sweep (or no two ops of a kind): each op on its own arrays, summed in op order
        for out, (first, last) in zip(outs, bounds, strict=True):
            for cost, shared, item, xs in items[first - 1:last]:
                if cost is None:  # a collective of one rank
                    t = 0.0 * (1.0 - c["tp_overlap"])
                    out["communication_s"] = out["communication_s"] + t
                    if shared[0]:
                        out["ep_communication_s"] = out["ep_communication_s"] + t
                # a GEMM absent from every row (gemm_time's flops 0) adds 0 to every term: not priced
                elif not (cost is _gemm_cost and x.skip_absent
                          and not any_row(np.asarray(2.0 * item[0] * item[1] * item[2] * item[3]) > 0)):
                    for key, value in cost(c, xs, *shared, *item).items():
                        out[key] = out[key] + value
    for out, back in zip(outs, passes, strict=True):
        out["total_s"] = out["gemm_s"] + out["attention_s"] + out["elementwise_s"] + out["communication_s"]
        if both and not back:  # (a forward pass stacked with a gradient one: its GEMMs' zeros, no weight gradient)
            out["wgrad_s"] = 0.0
    return outs if weights is None else combine(*zip(weights, outs, strict=True))


def _combined(keys, index, sums, weights):
    """:func:`combine` of the lists' price dicts from their sums (:func:`perfsim.cost.op_order.run_sums`):
    each list's ``total_s``, then every key weighted and added in list order, bit for bit."""
    zero = np.zeros(sums.shape[1:])
    gemm, attention, elementwise, communication = (sums[index[k]] if k in index else zero for k in CATEGORIES[:4])
    combined = weighted_sum(np.concatenate([sums, (((gemm + attention) + elementwise) + communication)[None]]), weights)
    out = {k: (combined[index[k]] if k in index else 0.0) for k in keys}
    out["total_s"] = combined[-1]
    return out


def combine(*terms):
    """Weighted sum of price dicts: ``combine((w1, d1), (w2, d2), ...)``."""
    keys = dict.fromkeys(k for _, d in terms for k in d)
    return {k: sum(w * d.get(k, 0.0) for w, d in terms) for k in keys}
