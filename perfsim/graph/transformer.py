"""Per-layer op graph of a decoder-only transformer, FLOPs and bytes as arrays.

One *pass* is a forward over ``tokens`` tokens (``seqs`` sequences of ``q_len`` new tokens each,
attending to ``kv_len`` keys). Prefill, decode and training micro-batches are all passes with
different shapes, so the same graph serves every phase. Shapes are per device after tensor
parallelism (``tp``): column-parallel projections split their outputs, row-parallel ones their
inputs, attention splits heads, and each parallel block ends in an all-reduce (or, with
sequence parallelism, a reduce-scatter + all-gather of the same volume).

An op is a :class:`Gemm` (``m × k`` by ``k × n``, ``groups`` of them), an :class:`Attention`
core (FLOPs and bytes), an :class:`Elementwise` pass (bytes, kernels) or a :class:`Comm`
(collective, bytes, ranks). Every field is an array over configurations (or a scalar).

References: Megatron-LM tensor parallelism (Shoeybi et al. 2019); FlashAttention IO
(Dao et al. 2022); multi-head latent attention (DeepSeek-V2, 2024); MoE routing (Fedus et al. 2021).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from perfsim.graph.attention_layout import attention_core, kv_bytes_per_token, kv_heads_per_device
from perfsim.graph.params import expert_tp
from perfsim.graph.weight_layout import attention_widths, block_comms, mlp_widths
from perfsim.plan.rows import any_row, maximum, minimum, where_one


@dataclass(frozen=True)
class Gemm:
    name: str
    m: object
    n: object
    k: object
    groups: object = 1.0
    weight: bool = True  # the k × n operand is a weight (read from memory every pass)
    expert: bool = False  # a routed-expert GEMM of a MoE layer (the engine's fused MoE kernels)
    wide: object = 0.0  # 1 where the engine runs this GEMM in 16 bits in an 8-bit recipe (runtime lm_head_16bit)
    normed: bool = False  # its input is a norm's output (the norm that writes it quantised: fp8_cast_ops)
    m_sd: object = 0.0  # standard deviation of the groups' rows about m (routed tokens per expert)


@dataclass(frozen=True)
class Attention:
    name: str
    flops: object
    moved_bytes: object
    blocks: object  # independent work units (batch × heads × query tiles), for wave quantisation
    # shape of the two matmuls per (sequence, KV head), for systolic arrays and PIM: query rows
    # sharing a KV head, head dimension, keys attended; softmax scores; KV-cache bytes read
    rows: object = 0.0
    depth: object = 0.0
    span: object = 0.0
    units: object = 0.0
    scores: object = 0.0
    kv_bytes: object = 0.0
    # fused-kernel calls each query tile takes part in, and 1 where the call's causal diagonal
    # runs through every query tile: the per-tile fixed costs of perfsim.cost.price.attention_length_eff
    # (0 for eager attention and decode, which that curve does not describe)
    visits: object = 0.0
    diagonal: object = 0.0
    # 1 for a fused decode call (one new row per sequence against its paged cache): the engine's
    # decode kernels' fixed costs per call and per (sequence, KV head) of perfsim.cost.price
    decode: object = 0.0


@dataclass(frozen=True)
class Elementwise:
    name: str
    moved_bytes: object
    kernels: object
    # the gradient pass's own traffic and kernels where they are not twice the forward's
    backward_bytes: object = None
    backward_kernels: object = None


@dataclass(frozen=True)
class Comm:
    name: str
    op: str
    size_bytes: object
    ranks: object
    backward_size: object = None  # the gradient pass's bytes where they differ from the forward's


@dataclass(frozen=True)
class Pass:
    """Shape of one forward pass on one model replica."""

    tokens: object  # tokens in the pass (all sequences)
    seqs: object  # sequences
    q_len: object  # new tokens per sequence
    kv_len: object  # keys attended per sequence (context incl. the new tokens)
    causal: object  # 1 where q_len == kv_len (prefill / training), else 0
    logits_tokens: object  # tokens whose logits are computed (all in training, last per sequence in inference)


def touched_experts(c, tokens):
    """Expected distinct routed experts hit by ``tokens × top_k`` draws from a balanced router."""
    experts = maximum(c["experts"], 1.0)
    return experts * (1.0 - np.power(1.0 - c["top_k"] / experts, tokens))


def kv_bytes_per_device_token(c):
    """KV-cache bytes one device holds per cached token: every layer of its (fullest) pipeline stage."""
    return kv_bytes_per_token(c) * c["stage_layers"]


#: MLA GEMMs whose form depends on the phase: prefill up-projects the cached latent (kv_up), decode
#: multiplies each head's query and output by W^UK and W^UV instead (q_absorb, v_absorb)
MLA_PHASE_GEMMS = ("kv_up", "q_absorb", "v_absorb")


#: the classes of one truth value (a configuration's comparisons of numbers)
_FALSE = (bool, np.bool_)


def attention_ops(c, p: Pass):
    """Projections and attention core of one layer."""
    tp, h, hd = c["tp"], c["hidden"], c["head_dim"]
    heads_dev = c["heads"] / tp
    kv_dev = kv_heads_per_device(c)
    T = p.tokens
    mla = c["kv_lora"] > 0
    qk = c["qk_nope"] + c["qk_rope"]
    # standard MHA/GQA/MQA: fused QKV (column-parallel) and output (row-parallel) projections
    qkv_n = where_one(mla, 0.0, (heads_dev + 2.0 * kv_dev) * hd)
    o_k = where_one(mla, heads_dev * c["v_head_dim"], heads_dev * hd)
    # MLA: down-projections are replicated, up-projections column-parallel
    q_lora = where_one(mla, c["q_lora"], 0.0)
    # MLA decode runs in the absorbed form (below): kv_up's two halves become per-head batched
    # GEMMs with a small inner dimension, one group per head (q_nope x W^UK: [tokens, qk_nope] x
    # [qk_nope, kv_lora]; latent output x W^UV: [tokens, kv_lora] x [kv_lora, v_head_dim]), the
    # engine's bmm calls (TensorRT-LLM forward_absorption_generation, mla_gen_pre / mla_gen_post in
    # ai-dynamo/aiconfigurator 095f58a51 collector/trtllm/collect_mla_bmm.py)
    # (a model without MLA: false on every pass, one number where ``mla`` is one, not an array of the passes)
    absorbed = np.False_ if mla.__class__ in _FALSE and not mla else mla & (p.causal <= 0)
    per_head = where_one(absorbed, heads_dev, 1.0)
    ops = [
        Gemm("qkv_proj", T, qkv_n, h, normed=True),
        Gemm("q_down", T, q_lora, where_one(mla, h, 0.0)),
        Gemm("q_up", T, where_one(mla, heads_dev * qk, 0.0), where_one(q_lora > 0, q_lora, h)),
        Gemm("kv_down", T, where_one(mla, c["kv_lora"] + c["qk_rope"], 0.0), where_one(mla, h, 0.0)),
        Gemm("kv_up", T, where_one(mla & ~absorbed, heads_dev * (c["qk_nope"] + c["v_head_dim"]), 0.0),
             where_one(mla, c["kv_lora"], 0.0)),
        Gemm("q_absorb", T, where_one(absorbed, c["kv_lora"], 0.0), c["qk_nope"], groups=per_head),
        Gemm("v_absorb", T, where_one(absorbed, c["v_head_dim"], 0.0), c["kv_lora"], groups=per_head),
    ]
    # attention core: QK^T and PV. Causal prefill skips the upper triangle.
    kv_eff = where_one(p.causal > 0, (p.kv_len + 1.0) / 2.0, p.kv_len)
    # MLA decode runs in the absorbed form (DeepSeek-V2, arXiv 2405.04434, Sec. 2.1.2: W^UK folds into
    # W^Q, W^UV into W^O): every head attends the cached latent itself, keys of kv_lora + qk_rope
    # dims and values of kv_lora dims, as one multi-query attention (TensorRT-LLM
    # tensorrt_llm/_torch/modules/attention.py @ c6d3bb2a, forward_absorption_generation: q_nope
    # times k_b_proj into [tokens, heads, kv_lora_rank] plus rope(q_pe), the MLA generation kernel
    # over the latent cache, then v_b_proj; FlashMLA's decode kernel, head dims 576/512). The
    # per-head products with W^UK and W^UV are the q_absorb / v_absorb batched GEMMs above.
    # Prefill (causal) decompresses the keys and values and attends with qk_nope + qk_rope / v_head_dim.
    qk_dim = where_one(absorbed, c["kv_lora"] + c["qk_rope"], where_one(mla, qk, hd))
    v_dim = where_one(absorbed, c["kv_lora"], where_one(mla, c["v_head_dim"], hd))
    # the rank's sequences, heads and KV bytes per token: by heads, or by batch (perfsim.graph.attention_layout)
    batched, seqs, heads_a, kv_a, token_bytes = attention_core(c, p, heads_dev, kv_dev)
    flops = 2.0 * seqs * p.q_len * kv_eff * heads_a * (qk_dim + v_dim)
    flops = flops * where_one(c["flash"] > 0, 1.0, where_one(p.causal > 0, 2.0 * p.kv_len / (p.kv_len + 1.0), 1.0))
    act = c["act_bytes"]
    rows_a = T if batched.__class__ is float else where_one(batched > 0, seqs * p.q_len, T)
    q_o = rows_a * heads_a * (qk_dim + v_dim) * act
    kv_read = seqs * p.kv_len * token_bytes
    eager_scores = (1.0 - c["flash"]) * 4.0 * seqs * heads_a * p.q_len * p.kv_len * act
    q_tiles = np.ceil(p.q_len / 128.0)
    # a fused prefill or training call visits each query tile once; under ring context parallelism
    # (causal 0.5) once per ring step: Transformer Engine's AttnFuncWithCPAndKVP2P (NVIDIA/TransformerEngine
    # d0067d0d, attention/dot_product_attention/context_parallel.py) runs cp calls, the causal
    # 'diagonal' one and cp - 1 'lower-triangle' (all local queries, half a KV chunk) or
    # 'upper-triangle' (half the queries, the whole chunk) ones, and every step after the first has
    # some rank on the lower triangle, whose call the ring waits for
    fused = (p.causal > 0) & (c["flash"] > 0)
    visits = where_one(fused, where_one(p.causal < 1.0, c["cp"], 1.0), 0.0)
    # by batch, an all-to-all brings the new tokens' queries to their sequences' ranks and one takes the outputs back
    moved = None if batched.__class__ is float else where_one(batched > 0, T * heads_dev * act, 0.0)
    ops += [] if moved is None else [Comm("attn_q_all_to_all", "all_to_all", moved * qk_dim, tp)]
    ops.append(Attention("attention", flops, q_o + kv_read + eager_scores, seqs * heads_a * q_tiles,
                         rows=p.q_len * heads_a / where_one(absorbed, 1.0, kv_a), depth=qk_dim, span=kv_eff,
                         units=seqs * where_one(absorbed, 1.0, kv_a),
                         scores=seqs * heads_a * p.q_len * kv_eff, kv_bytes=kv_read,
                         visits=visits, diagonal=where_one(fused, 1.0, 0.0),
                         decode=where_one((p.causal <= 0) & (c["flash"] > 0) & (p.q_len <= 1.0), 1.0, 0.0)))
    ops += [] if moved is None else [Comm("attn_o_all_to_all", "all_to_all", moved * v_dim, tp)]
    ops.append(ring_merge(c, p, qk_dim, v_dim))
    ops.append(Gemm("o_proj", T, h, o_k))
    ops += [Comm(*k) for k in block_comms(c, T, "tp_attn", T * h * act, *attention_widths(c))]  # (weight_layout)
    return ops


def ring_merge(c, p: Pass, qk_dim, v_dim):
    """The memory traffic ring context parallelism adds around its ``cp`` attention calls per layer
    (``p.causal`` 0.5), as separate elementwise kernels: every ring plan merges partial results,
    whatever engine runs it. Counted as Transformer Engine's AttnFuncWithCP runs it
    (NVIDIA/TransformerEngine v1.4 0fbc76af transformer_engine/pytorch/attention.py; the same steps in
    v2.3 attention/dot_product_attention/context_parallel.py AttnFuncWithCPAndKVP2P), in units of the
    rank's local ``Q`` (queries, or outputs ``O``: tokens x local heads x head dim) and ``KV`` (keys and
    values) bytes; of the ``cp - 1`` steps after the causal diagonal one, a rank runs on average half
    'lower' (all local queries, the first half of the arriving K/V chunk) and half 'upper' (the second
    half of the queries, the whole chunk):

    * forward: K and V packed into the send buffer (``torch.cat``: ``2 KV`` read and written); the
      diagonal call's output taken as the running output (``2 O``); each later step slices its
      K/V half (lower: ``KV`` copied by ``.contiguous()``) or its query half (upper: ``Q``) and merges
      its partial output into the running one by the log-sum-exp correction
      (``flash_attn_fwd_out_correction``: running and partial read, running written, ``3 O`` lower,
      ``1.5 O`` upper): ``2 KV + 2 O + (cp - 1)(KV / 2 + Q / 2 + 2.25 O)``, ``3 cp - 1`` kernels;
    * backward: K/V copied into the ring buffer (``2 KV``); every step's dQ added into the running dQ
      (``3 Q`` over the step's queries: lower, diagonal; ``1.5 Q`` upper), its dK and dV concatenated
      (``torch.cat``: ``2 KV`` over the step's keys) and added into the dK/dV that travels on (``3 KV``);
      the slices made contiguous: K/V half (lower, ``KV``), query, output and output-gradient halves
      (upper, ``Q + 2 O``): ``7 KV + 3 Q + (cp - 1)(2.75 Q + O + 4.25 KV)``, ``5 cp - 1`` kernels.

    The log-sum-exp rows (one value per query and head, 1/head_dim of ``O``) are left out. 0 without
    ring context parallelism."""
    ring = (p.causal > 0) & (p.causal < 1.0) & (c["flash"] > 0)
    if not any_row(ring):  # no row runs a ring: the op moves nothing (each term below is 0 on every row)
        return Elementwise("cp_ring_merge", 0.0, 0.0, backward_bytes=0.0, backward_kernels=0.0)
    heads_dev, kv_dev, act, T = c["heads"] / c["tp"], kv_heads_per_device(c), c["act_bytes"], p.tokens
    q = T * heads_dev * qk_dim * act
    o = T * heads_dev * v_dim * act
    kv = T * kv_dev * (qk_dim + v_dim) * act
    steps = where_one(ring, c["cp"] - 1.0, 0.0)
    forward = 2.0 * kv + 2.0 * o + steps * (0.5 * kv + 0.5 * q + 2.25 * o)
    backward = 7.0 * kv + 3.0 * q + steps * (2.75 * q + o + 4.25 * kv)
    return Elementwise("cp_ring_merge", where_one(ring, forward, 0.0), where_one(ring, 3.0 * steps + 2.0, 0.0),
                       backward_bytes=where_one(ring, backward, 0.0),
                       backward_kernels=where_one(ring, 5.0 * steps + 4.0, 0.0))


def dense_mlp_ops(c, p: Pass):
    """Dense MLP of one layer (gated: fused gate+up, plain: up), then down and its all-reduce."""
    tp, h = c["tp"], c["hidden"]
    ffn_dev = c["ffn"] / tp
    T = p.tokens
    return [
        Gemm("mlp_up", T, (1.0 + c["gated"]) * ffn_dev, h, normed=True),
        Gemm("mlp_down", T, h, ffn_dev),
    ] + [Comm(*k) for k in block_comms(c, T, "tp_mlp", T * h * c["act_bytes"] * (1.0 - c["parallel_block"]),
                                        *mlp_widths(c))]


def expert_group_scale(c):
    """Distinct tokens an expert-parallel group routes, per token of one replica's pass.

    The ``ep × etp`` ranks of an expert group hold ``ep × etp / tp`` replicas' worth of tokens
    (tensor-parallel ranks of one replica share their tokens; sequence parallelism splits them),
    so with ``ep`` folded over data-parallel ranks (DEP) each expert sees tokens from several
    replicas.
    """
    return c["ep"] * expert_tp(c) / c["tp"]


#: quadrature grid of the standard normal density and distribution function (|x| <= 8 holds all
#: but 1e-15 of the mass)
_X = np.linspace(-8.0, 8.0, 3201)
_PDF = np.exp(-0.5 * _X * _X) / math.sqrt(2.0 * math.pi)
_CDF = np.array([0.5 * math.erfc(-x / math.sqrt(2.0)) for x in _X])


def expected_max_normal(k):
    """Expected maximum of ``k`` independent standard normal variables (0 for ``k = 1``): the
    integral of ``x · k φ(x) Φ(x)^(k-1)`` (the density of the largest of ``k``; David and
    Nagaraja, *Order Statistics*, 3rd ed., Sec. 2.1), by quadrature. Vectorised over ``k``.

    >>> [round(float(v), 4) for v in expected_max_normal([1, 2, 4, 8])]
    [0.0, 0.5642, 1.0294, 1.4236]
    """
    k = np.asarray(k, dtype=float)
    values, index = np.unique(k, return_inverse=True)
    density = values[:, None] * _PDF * _CDF ** (values[:, None] - 1.0)
    return np.trapezoid(_X * density, _X, axis=1)[index].reshape(k.shape)


def rank_imbalance(c, tokens):
    """Routed tokens of the busiest rank of an expert-parallel group over the mean (>= 1).

    Every MoE layer waits for its slowest rank: dispatch, expert GEMMs and combine end when the
    rank that received the most routed tokens is done. A router balanced in expectation sends
    each of ``tokens`` tokens to ``top_k`` distinct experts out of ``experts``; a rank holding
    ``experts / ep`` of them receives a hypergeometric count per token (mean ``top_k / ep``,
    variance ``top_k p (1 - p) (experts - top_k) / (experts - 1)`` with ``p = 1 / ep``), whose
    sum over the tokens is near normal; the busiest of ``ep`` ranks is then
    ``mean + E[max of ep standard normals] · sd`` (:func:`expected_max_normal`). Padded expert
    buffers (``capacity_factor``) take the same work on every rank: 1.
    """
    ep = maximum(c["ep"], 1.0)
    experts = maximum(c["experts"], 1.0)
    k = minimum(c["top_k"], experts)
    p = 1.0 / ep
    mean = tokens * k * p
    correction = where_one(experts > 1.0, (experts - k) / maximum(experts - 1.0, 1.0), 0.0)
    sd = np.sqrt(maximum(tokens * k * p * (1.0 - p) * correction, 0.0))
    spread = where_one(mean > 0, expected_max_normal(ep) * sd / where_one(mean > 0, mean, 1.0), 0.0)
    return where_one(np.isnan(c["capacity_factor"]), 1.0 + spread, 1.0)


def expert_spread(c, tokens):
    """Standard deviation of the routed tokens one expert receives from ``tokens`` tokens, each
    sent to ``top_k`` distinct experts of ``experts`` by a router balanced in expectation: a
    binomial count, ``sqrt(tokens p (1 - p))`` with ``p = top_k / experts``. The grouped expert
    GEMM pads each expert's rows to whole tiles on its own (CUTLASS grouped GEMM: one problem
    per expert), so its tiles are the expected ones of the spread counts
    (:func:`perfsim.cost.roofline.expected_tiles`) rather than those of the mean. 0 with padded
    expert buffers (``capacity_factor``: every expert the same rows)."""
    experts = maximum(c["experts"], 1.0)
    p = minimum(c["top_k"], experts) / experts
    sd = np.sqrt(maximum(tokens * p * (1.0 - p), 0.0))
    return where_one(np.isnan(c["capacity_factor"]), sd, 0.0)


def capacity_scale(c):
    """Routed work per routed token: the capacity factor where one is set (padded expert
    buffers), 1 for dropless routing."""
    cf = c["capacity_factor"]
    return where_one(np.isnan(cf), 1.0, cf)


def moe_mlp_ops(c, p: Pass):
    """MoE MLP: router, shared experts (dense), routed experts as one grouped GEMM.

    Tokens spread evenly over experts (a balanced router); the experts a pass touches are the
    expected number of distinct experts hit by ``tokens × top_k`` draws, so a small decode batch
    reads only the experts it uses. With expert parallelism (``ep`` ranks, experts split
    ``ep`` ways and each expert ``etp = max(tp / ep, 1)`` ways) tokens travel to their experts'
    ranks and back in two all-to-alls (dispatch, combine) of ``top_k`` copies of each token;
    the layer runs at the pace of the rank that receives the most (:func:`rank_imbalance`).

    A ``capacity_factor`` (GShard, Switch Transformer) gives every expert a fixed buffer of
    ``capacity_factor × tokens × top_k / experts`` slots: the expert GEMMs run over the padded
    buffers and the all-to-alls ship them whole (tokens over capacity are dropped, so the
    buffer is the work). Without one (dropless routing, MegaBlocks) the tokens routed are the work.
    """
    tp, h, ep = c["tp"], c["hidden"], c["ep"]
    etp = expert_tp(c)
    T = p.tokens
    group_tokens = T * expert_group_scale(c)
    touched = touched_experts(c, group_tokens)
    tokens_per_expert = group_tokens * c["top_k"] / maximum(touched, 1e-9)
    padded = capacity_scale(c) * rank_imbalance(c, group_tokens)
    tokens_per_expert = tokens_per_expert * padded
    spread = expert_spread(c, group_tokens)
    local = touched / ep
    ffn_dev = c["moe_ffn"] / etp
    shared_dev = c["shared_experts"] * c["moe_ffn"] / tp
    sent = _dispatch_bytes(c)
    gathered, scattered = _exchange(c, group_tokens, sent)
    # the routed copies: dispatched in the format the engine sends (:func:`_dispatch_bytes`), combined in 16 bits
    routed = where_one(gathered > 0, 0.0, group_tokens / ep * c["top_k"] * h * padded)
    return [
        Gemm("router", T, c["experts"], h),
        moe_routing(c, p),
        Gemm("shared_up", T, (1.0 + c["gated"]) * shared_dev, h),
        Gemm("shared_down", T, where_one(shared_dev > 0, h, 0.0), shared_dev),
        Comm("ep_dispatch", "all_to_all", routed * sent, ep),
        Comm("ep_gather", "all_gather", gathered, ep),
        Gemm("experts_up", tokens_per_expert, (1.0 + c["gated"]) * ffn_dev, h, groups=local, expert=True, m_sd=spread),
        Gemm("experts_down", tokens_per_expert, h, ffn_dev, groups=local, expert=True, m_sd=spread),
        Comm("ep_combine", "all_to_all", routed * c["act_bytes"], ep),
        Comm("ep_reduce_scatter", "reduce_scatter", scattered, ep),
        Comm("tp_mlp", "all_reduce", T * h * c["act_bytes"] * (1.0 - c["parallel_block"]), tp),
    ]


def _dispatch_bytes(c):
    """Bytes per element of the activations an expert group sends to its experts' ranks: 16-bit, or
    the compute format where the engine quantises before it sends (``moe_dispatch_quantized_on``;
    NVFP4, 4-bit values with one 8-bit scale per 16, is 9/16 byte)."""
    act, q = c["act_bytes"], c["compute_bytes"]
    quantized = minimum(where_one(q < 1.0, q + 1.0 / 16.0, q), act)
    return where_one(c.get("moe_dispatch_q", 0.0) > 0, quantized, act)


def _exchange(c, group_tokens, sent):
    """Bytes of the all-gather and reduce-scatter (nccl-tests sizes: the gathered buffer, the
    scattered input) with which an engine whose ``moe_exchange`` is ``all_gather`` moves the tokens
    of an expert group spread over data-parallel ranks (DEP): every rank gathers all the group's
    tokens (``sent`` bytes per element: :func:`_dispatch_bytes`), runs its experts on those routed to them, and
    reduce-scatters the 16-bit outputs of all of them (TensorRT-LLM's CUTLASS MoE with attention
    data parallelism), except on a scale-up domain of ``moe_all_to_all_domain`` devices or more
    (GB200 NVL72: its NVLink all-to-all). 0 elsewhere (two all-to-alls of the routed copies)."""
    on = (c.get("moe_all_gather", 0.0) > 0) & (expert_group_scale(c) > 1.0) & (c["ep"] > 1) \
        & (c["devices_per_node"] < c.get("moe_a2a_domain", np.inf))
    tokens = group_tokens * c["hidden"]
    return where_one(on, tokens * sent, 0.0), where_one(on, tokens * c["act_bytes"], 0.0)


def moe_routing(c, p: Pass):
    """The work around the experts that a training MoE layer does as separate kernels (Megatron-core's
    all-to-all token dispatcher, megatron/core/transformer/moe: ``router.py``, ``moe_utils.permute`` /
    ``unpermute``, ``token_dispatcher.py``): the router's fp32 softmax and top-k over the expert logits;
    ``permute`` copies each token once per routed expert into expert order (``top_k`` rows read and
    written); ``unpermute`` reads them back and sums the probability-weighted copies into the token
    (``top_k`` rows read, one written); with several local experts after an expert-parallel all-to-all,
    ``sort_chunks_by_idxs`` reorders the received rows by expert on the way in and back on the way out.
    Inference engines fuse the gather into the expert GEMM (vLLM's fused MoE), so this is training's.
    """
    h, act, k, T = c["hidden"], c["act_bytes"], c["top_k"], p.tokens
    rows = T * capacity_scale(c)  # padded buffers are copied whole
    router = T * c["experts"] * 4.0 * 3.0  # fp32 logits read, probabilities written, read by top-k
    permute = rows * k * h * act * 2.0 + rows * k * h * act + T * h * act
    local = touched_experts(c, T * expert_group_scale(c)) / c["ep"]
    sort = where_one((c["ep"] > 1) & (local > 1), 2.0 * 2.0 * rows * k * h * act, 0.0)
    moved = where_one(c["train"] > 0, router + permute + sort, 0.0)
    return Elementwise("moe_routing", moved, where_one(c["train"] > 0, 4.0, 0.0))


def layer_elementwise(c, p: Pass, moe: bool):
    """Norms, residual adds, activation, rotary, softmax bookkeeping of one layer, as traffic."""
    tp, h, act = c["tp"], c["hidden"], c["act_bytes"]
    T = p.tokens
    norms = 2.0 - c["parallel_block"]
    width = where_one(c["kv_lora"] > 0, c["heads"] * (c["qk_nope"] + c["qk_rope"]), (c["heads"] + c["kv_heads"]) * c["head_dim"])
    ffn = (c["moe_ffn"] * (c["top_k"] + c["shared_experts"])) if moe else c["ffn"]
    moved = T * act * (norms * 2.0 * h + 2.0 * 3.0 * h + (2.0 + c["gated"]) * ffn / tp + 2.0 * width / tp) \
        * c["elementwise_traffic"]
    return Elementwise("elementwise", moved, c["kernels_per_layer"])


def fp8_cast_ops(c, ops):
    """The quantisation an 8-bit training recipe adds around the layer's GEMMs ``ops``, as one
    memory-bound op: 0 outside 8-bit training.

    Each GEMM that runs in 8 bits (not ``wide``) takes its input and, in the gradient pass, its
    output gradient quantised: a kernel reads the 16-bit tensor and writes it in the compute format
    (its absolute maximum, for the scale, reduced on the way), and where the engine's backward
    GEMMs need the other layout (``fp8_transpose``: Hopper's fp8 tensor cores take only the TN
    layout) a transposed copy beside it, in the same kernel (Transformer Engine's
    ``fp8_cast_transpose_fused``, ``cast_transpose_bgrad`` for the output gradient). Where the
    input is a norm's output and the engine fuses the cast into the norm (``fp8_norm_cast``:
    Transformer Engine's LayerNormLinear), the norm writes the compute format instead of 16 bits
    (``compute - act`` bytes per element, on top of the norm traffic of :func:`layer_elementwise`)
    and the transposed copy is a separate transpose of the quantised tensor (read and written
    once). Weights are cast the same way (16-bit in, compute format and its transpose out), every
    micro-batch, or once per step where the engine keeps them (``fp8_weight_cache``). An engine
    that gives none of the keys pays 4 bytes per element of every input, weight and output gradient
    each micro-batch, the count of torchao's own float8 training roofline (pytorch/ao 086ff72e,
    torchao/float8/roofline_utils.py: bf16 read, two fp8 copies written, the amax read fused with
    the previous op; it adds a 2-byte amax read of the weight for dynamic scaling).
    """
    a, q, t = c["act_bytes"], c["compute_bytes"], c.get("fp8_transpose", 1.0)
    on = (q < a) & (c["train"] > 0)
    fused = c.get("fp8_norm_cast", 0.0) > 0
    if not any_row(on):  # no row quantises: the op moves nothing (each term below is 0 on every row)
        return Elementwise("fp8_cast", 0.0, 0.0, backward_bytes=0.0, backward_kernels=0.0)
    per_step = np.where(c.get("fp8_weight_cache", 0.0) > 0,
                        c.get("dp", 1.0) * c.get("micro_batch", 1.0) / np.maximum(c.get("global_batch", 1.0), 1.0), 1.0)
    forward = backward = kernels = backward_kernels = 0.0
    for g in ops:
        if not isinstance(g, Gemm):
            continue
        live = on & (np.asarray(g.wide) <= 0) & (np.asarray(g.m * g.n * g.k * g.groups) > 0)
        inputs = g.m * g.k * g.groups
        norm = fused & g.normed
        forward = forward + np.where(live, inputs * np.where(norm, q - a + 2.0 * t * q, a + q + t * q), 0.0)
        kernels = kernels + np.where(live, np.where(norm, t, 1.0), 0.0)
        if g.weight:
            forward = forward + np.where(live, g.k * g.n * g.groups * (a + q + t * q) * per_step, 0.0)
            kernels = kernels + np.where(live, per_step, 0.0)
        backward = backward + np.where(live, g.m * g.n * g.groups * (a + q + t * q), 0.0)
        backward_kernels = backward_kernels + np.where(live, 1.0, 0.0)
    return Elementwise("fp8_cast", forward, kernels, backward_bytes=backward, backward_kernels=backward_kernels)


def layer_ops(c, p: Pass, moe: bool):
    """All ops of one transformer layer (``moe`` selects the MoE MLP)."""
    mlp = moe_mlp_ops(c, p) if moe else dense_mlp_ops(c, p)
    ops = [*attention_ops(c, p), *mlp]
    return [*ops, layer_elementwise(c, p, moe), fp8_cast_ops(c, ops)]


def embedding_ops(c, p: Pass):
    """Embedding lookup (first pipeline stage)."""
    return [Elementwise("embedding", p.tokens * c["hidden"] * c["act_bytes"] * 2.0, 1.0)]


def lm_head_ops(c, p: Pass):
    """Final norm, LM head (vocab-parallel), its logits gather and, in training, the loss's
    kernels over the rank's logits (runtime ``loss_*_bytes_per_logit``) (last pipeline stage)."""
    h, tp, act = c["hidden"], c["tp"], c["act_bytes"]
    # an engine whose 8-bit recipe covers the transformer layers only runs the LM head in 16 bits
    wide = where_one(c["compute_bytes"] < act, c.get("lm_head_wide", 0.0), 0.0)
    head = Gemm("lm_head", p.logits_tokens, c["vocab"] / tp, h, wide=wide)
    train = c["train"] > 0
    logits = p.logits_tokens * c["vocab"] / tp * train
    return [
        Elementwise("final_norm", p.logits_tokens * h * act * 2.0, 1.0),
        head,
        fp8_cast_ops(c, [head]),
        # inference gathers the sampled tokens' logits; training keeps them vocab-parallel: the loss
        # all-reduces three fp32 numbers per token (the row max, the target's logit, the sum of
        # exponentials: Megatron's vocab-parallel cross entropy, core_r0.8.0
        # tensor_parallel/cross_entropy.py; priced as one collective of their 12 bytes) and the
        # backward all-reduces the head's input gradient (with sequence parallelism an all-gather
        # of the norm's output forward and a reduce-scatter backward, the same bytes in all)
        Comm("tp_logits", "all_gather", where_one(train, 0.0, p.logits_tokens * c["vocab"] * 4.0), tp),
        Comm("tp_loss", "all_reduce", where_one(train, p.logits_tokens * 12.0, 0.0), tp,
             backward_size=where_one(train, p.logits_tokens * h * act, 0.0)),
        Elementwise("loss", logits * c["loss_fwd_traffic"], where_one(logits > 0, c["loss_fwd_kernels"], 0.0),
                    backward_bytes=logits * c["loss_bwd_traffic"],
                    backward_kernels=where_one(logits > 0, c["loss_bwd_kernels"], 0.0)),
    ]


def head_ops(c, p: Pass):
    """Embedding lookup, final norm, LM head (vocab-parallel) and its logits gather."""
    return [*embedding_ops(c, p), *lm_head_ops(c, p)]
