"""One batch of inference requests: prefill, then decode steps, closed form.

A replica (``tp × pp`` devices; ``dp`` replicas share the batch) runs the prefill of its
sequences as one pass, then ``gen_len - 1`` decode steps. Decode cost grows linearly with
context (KV reads), so the mean step is priced at the mean context ``prompt_len + gen_len / 2``.
Pipeline stages run one after another for one batch: latency is the sum over stages plus the
activation hand-offs between them.
"""

from __future__ import annotations

import numpy as np

from perfsim.analytical import offload
from perfsim.analytical.heterogeneous import host_kv_share, inference_results, place_pass
from perfsim.cost.host import hidden_host
from perfsim.cost.power import cap_passes
from perfsim.cost.price import combine, price, price_segments
from perfsim.cost.topology import group_collective, nic_bytes
from perfsim.graph.params import layer_counts, layer_params_per_device, stage_params_per_device
from perfsim.graph.transformer import (
    MLA_PHASE_GEMMS,
    Attention,
    Pass,
    attention_ops,
    expert_group_scale,
    head_ops,
    kv_bytes_per_device_token,
    layer_ops,
    touched_experts,
)
from perfsim.plan.rows import Detail, any_row, floats, maximum, where_one
from perfsim.specs.units import GIB


def forward_time(c, p: Pass, layers_scale=1.0):
    """Price one forward pass of the whole model on one replica: ``(total_s, breakdown)``."""
    dense, moe = layer_counts(c)
    weights = [dense * layers_scale, *([moe * layers_scale] if any_row(moe > 0) else []), 1.0]
    lists = [layer_ops(c, p, moe=False), *([layer_ops(c, p, moe=True)] if len(weights) > 2 else []), head_ops(c, p)]
    out = price_segments(c, lists, weights=weights)
    out = place_pass(c, p, out, layers_scale)  # ops placed on PIM (perfsim.analytical.heterogeneous)
    size = p.tokens * c["hidden"] * c["act_bytes"]
    hops = c["pp"] - 1.0
    if any_row(hops != 0.0):
        hand_off = group_collective(c, "send_recv", size, 2.0, stride=c["tp"]) * hops
        nic = hops * nic_bytes(c, "send_recv", size, 2.0, stride=c["tp"])
    else:  # one stage on every row: no hand-off, 0 on every row (a valid spec's hop costs a finite time)
        hand_off = nic = 0.0 * hops
    # each stage sends its activations on (read from and written to device memory)
    out["link_bytes"] = out["link_bytes"] + hops * size
    out["hbm_bytes"] = out["hbm_bytes"] + 2.0 * hops * size
    out["nic_bytes"] = out["nic_bytes"] + nic
    out["pipeline_s"] = hand_off
    # the engine's host time, per step and per sequence the step serves, less what it runs under
    # the kernels (perfsim.cost.host): ``overhead_s`` is the host time the device does not hide
    host = c["step_overhead_s"] + c["host_per_seq_s"] * p.seqs + 0.0 * hand_off
    serial = out["total_s"] + hand_off + host
    hidden = hidden_host(serial, host, c.get("host_overlap", 0.0))
    out["overhead_s"] = host - hidden
    out["total_s"] = serial - hidden
    return out["total_s"], out


def attention_cost(c, p: Pass, layers_scale=1.0, *, mla_gemms=True):
    """The attention cores of :func:`forward_time` alone, every layer: the part of a pass that
    depends on each sequence's context, priced by the same op.

    ``forward_time(c, p)`` is this plus a part that depends only on ``p.tokens`` (projections,
    MLPs, norms, collectives, embedding, pipeline hand-offs), a part that depends only on
    ``p.logits_tokens`` (LM head) and the step overhead, so a batch of sequences with different
    contexts is priced as the sum (the serving simulator's cost tables rely on this).
    With ``mla_gemms`` it also holds MLA's phase-dependent GEMMs (:data:`MLA_PHASE_GEMMS`: the
    key/value up-projection of prefill, the absorbed per-head products of decode), which depend
    on the phase, not only on the token count.

    Returns
    -------
    dict
        ``price`` keys (``total_s``, ``attention_s``, ``flops``, ``hbm_bytes``, ...), arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from perfsim.plan.columns import build
    >>> from perfsim.plan.grid import expand
    >>> c = build(expand({"model": "llama2-7b", "hardware": "a100-80gb"}))
    >>> p = Pass(tokens=8.0, seqs=8.0, q_len=1.0, kv_len=1024.0, causal=0.0, logits_tokens=8.0)
    >>> _, parts = forward_time(c, p)
    >>> bool(np.isclose(attention_cost(c, p)["total_s"], parts["attention_s"]))
    True
    """
    ops = [op for op in attention_ops(c, p) if isinstance(op, Attention) or (mla_gemms and op.name in MLA_PHASE_GEMMS)]
    return combine((c["layers"] * layers_scale, price(c, ops)))


#: the array class, bound once (the loop below reads it for each of some 250 columns)
_ARRAY = np.ndarray


def one_configuration(c) -> bool:
    """Whether every column holds one number (a single estimate): then passes can be priced together
    on a short leading axis, each elementwise as alone, with fewer NumPy calls."""
    for value in c.values():  # (numbers, NumPy scalars and arrays: only an array has rows)
        if value.__class__ is _ARRAY and value.ndim:
            return False
    return True


def _forward_pair(c, first: Pass, second: Pass, one=None):
    """The breakdowns of :func:`forward_time` of two passes. Where every column and every field of
    the passes is one number (a single estimate; ``one``: :func:`one_configuration`, where known),
    the two are priced in one call on arrays of two elements: the same values, elementwise, with
    half the NumPy calls (a field the two passes share to the bit, such as the sequences, stays one
    number: what depends on it alone is priced on numbers)."""
    fields = [(getattr(first, f), getattr(second, f)) for f in Pass.__dataclass_fields__]
    if any(getattr(v, "ndim", 0) for pair in fields for v in pair) or not (one_configuration(c) if one is None else one):
        return forward_time(c, first)[1], forward_time(c, second)[1]
    both = forward_time(c, Pass(*(_shared(*pair) for pair in fields)))[1]
    return tuple({k: (v[i] if getattr(v, "ndim", 0) else v) for k, v in both.items()} for i in (0, 1))


def _shared(a, b):
    """Two passes' values of a field: one NumPy float where they are the same bits, else an array of the two."""
    pair = np.array((a, b), dtype=float)
    return pair[0] if pair[0].tobytes() == pair[1].tobytes() else pair


def _batched(parts, batches):
    """A pass priced for one GPU batch (:func:`forward_time`'s breakdown), run ``batches`` times
    one after another: every time and work key scales, the per-step host overhead does not."""
    out = {k: (v if k == "overhead_s" else v * batches) for k, v in parts.items()}
    out["total_s"] = (parts["total_s"] - parts["overhead_s"]) * batches + parts["overhead_s"]
    return out


def _separate_dequant(c, parts, params, batches):
    """Add an engine's separate dequantisation pass to a pass's price dict, in place.

    Where ``weight_dtype`` differs from ``dtype`` the GEMMs are priced with the conversion fused
    into them (:func:`perfsim.cost.roofline.dequant_time`); an engine that instead expands each
    layer's weights into a 16-bit tensor before its GEMMs (FlexGen's ``decompress``) moves
    ``dequant_pass_bytes`` of device memory per weight for every GPU batch, and its GEMMs read the
    16-bit weights rather than the stored ones, at the device's streaming bandwidth.
    """
    per_weight = where_one((c["dequant"] > 0) & (c["dequant_pass_bytes"] > 0),
                          c["dequant_pass_bytes"] + maximum(c["act_bytes"] - c["w_bytes"], 0.0), 0.0)
    moved = params * per_weight * batches
    t = moved / (c["hbm_bw"] * c["memory_max"])
    for key in ("elementwise_s", "memory_bound_s", "total_s"):
        parts[key] = parts[key] + t
    parts["hbm_bytes"] = parts["hbm_bytes"] + moved


def _working_set_per_seq(c, prompt):
    """Bytes of transient tensors one sequence's prefill holds on a device while a layer runs:
    the layer's inputs, projections and MLP intermediates, the scores and probabilities where
    the attention kernel is eager (no flash tiling), and fp32 logits."""
    h, tp = c["hidden"], c["tp"]
    ffn_dev = maximum(c["ffn"], c["moe_ffn"] * (c["top_k"] + c["shared_experts"])) / tp
    qkv_dev = (c["heads"] + 2.0 * c["kv_heads"]) * c["head_dim"] / tp
    scores = (1.0 - c["flash"]) * 2.0 * c["heads"] / tp * prompt * prompt
    return (prompt * (4.0 * h + qkv_dev + (2.0 + c["gated"]) * ffn_dev) + scores) * c["act_bytes"] \
        + c["vocab"] / tp * 4.0


def estimate_inference(c, single=None):
    """Inference results as a flat dict of arrays (dotted keys), plus ``(mask, reason)`` checks. ``single``:
    :func:`one_configuration` of ``c``, where known."""
    seqs = np.ceil(c["batch"] / maximum(np.floor(c["dp"]), 1.0))
    prompt, gen = c["prompt_len"], c["gen_len"]
    one = np.ones_like(floats(seqs))
    # weight bytes on the busiest device (its share of the layers plus embedding/head), experts among them
    replicated, expert_params = stage_params_per_device(c)
    weights, experts = (replicated + expert_params) * c["w_bytes"], expert_params * c["w_bytes"]
    kv_token = kv_bytes_per_device_token(c)
    working = _working_set_per_seq(c, prompt)
    # an offloaded block runs as GPU batches one after another (perfsim.analytical.offload)
    batches = offload.gpu_batches(c, seqs, weights=weights, experts=experts, working_set=working,
                                  kv_per_seq=(prompt + gen) * kv_token,
                                  hidden_per_seq=prompt * c["hidden"] * c["act_bytes"])
    prefill = Pass(tokens=seqs * prompt, seqs=seqs, q_len=prompt, kv_len=prompt, causal=one, logits_tokens=seqs)
    decode = Pass(tokens=seqs, seqs=seqs, q_len=one, kv_len=prompt + gen / 2.0, causal=0.0 * one, logits_tokens=seqs)
    # one GPU batch's passes, run ``batches`` times (the same as the whole batch where it is 1)
    b = seqs / batches
    pre_b = Pass(tokens=b * prompt, seqs=b, q_len=prompt, kv_len=prompt, causal=one, logits_tokens=b)
    dec_b = Pass(tokens=b, seqs=b, q_len=one, kv_len=prompt + gen / 2.0, causal=0.0 * one, logits_tokens=b)
    one = one_configuration(c) if single is None else single
    if any_row(batches > 1):
        pre, dec = (_batched(parts, batches) for parts in _forward_pair(c, pre_b, dec_b, one))
    else:  # (the whole batch's passes: they depend on fewer of a sweep's axes than the GPU batches do)
        pre, dec = _forward_pair(c, prefill, decode, one)
    for parts in (pre, dec):  # an engine that dequantises weights in a pass of its own (no-op without)
        _separate_dequant(c, parts, replicated + expert_params, batches)
    # offloaded weights, KV cache, activations (perfsim.analytical.offload): no-op without
    touched = tuple(_touched_params(c, p.tokens)[1] * c["w_bytes"]
                    for p in (prefill, decode)) if any_row(c["exp_given"] > 0) else (0.0, 0.0)
    offloaded = offload.inference_times(c, prefill, decode, pre, dec, weights, batches, experts=experts,
                                        touched=touched)
    # attention over a host-resident cache that runs on the host CPU does no device work
    on_host = offloaded["breakdown.decode.cpu_attention"] * (c["kv_frac_cpu"] + c["kv_frac_nvme"])
    if any_row(on_host > 0):
        moved = attention_cost(c, dec_b, mla_gemms=False)
        for key in ("flops", "hbm_bytes"):
            dec[key] = dec[key] - on_host * batches * moved[key]
    # a power cap lowers each phase's clock (perfsim.cost.power): no-op without
    cap_checks = cap_passes(c, {"prefill": pre, "decode": dec}, devices_per_pass=c["pp"], together=one)
    ttft, tpot = pre["total_s"], dec["total_s"]
    steps = maximum(gen - 1.0, 0.0)
    e2e = ttft + steps * tpot
    out = {"ttft_s": ttft, "tpot_s": where_one(gen > 1, tpot, 0.0), "e2e_latency_s": e2e,
           "throughput_tokens_per_s": c["batch"] * gen / e2e}
    for phase, parts in (("prefill", pre), ("decode", dec)):
        for key in ("gemm_s", "attention_s", "elementwise_s", "communication_s", "pipeline_s", "overhead_s",
                    "launch_s", "compute_bound_s", "memory_bound_s", "offload_s", "host_attention_s", "transfer_s",
                    "total_s", "throttle_s", "clock_ratio"):
            if key in parts:
                out[f"breakdown.{phase}.{key}"] = parts[key]
    out["breakdown.decode.steps"] = steps
    out["breakdown.decode.hbm_bound_s"] = _hbm_bound(c, seqs, prompt + gen / 2.0)
    out["breakdown.gpu_batches"] = batches

    # memory per device (busiest stage)
    kv = seqs * (prompt + gen) * kv_token
    kv = kv * host_kv_share(c)  # none where the KV cache lives in PIM stacks beside the device
    activations = seqs * working
    tiers = offload.inference_memory(c, weights, kv, activations, seqs * prompt * c["hidden"] * c["act_bytes"],
                                     offloaded, experts)
    weights, kv, activations = (tiers["gpu"][k] for k in ("weights", "kv_cache", "activations"))
    other = c["fragmentation"] * activations + tiers["staging"]
    usable = c["capacity_bytes"] * c["gpu_memory_utilization"]
    free = usable - weights - activations - other
    tokens_fit = np.floor(maximum(free, 0.0) / kv_token)
    total = weights + kv + activations + other
    mem = {"weights": weights, "gradients": 0.0 * weights, "optimizer": 0.0 * weights, "model_states": weights,
           "activations": activations, "kv_cache": kv, "other": other, "total": total, "capacity": c["capacity_bytes"]}
    for key, value in mem.items():
        out[f"memory_per_device_gib.{key}"] = value / GIB
    out["kv_cache_capacity_tokens"] = tokens_fit
    out["max_concurrency"] = np.floor(tokens_fit / (prompt + gen))
    checks = [(total > usable, "does not fit in device memory",
               Detail("does not fit: {:.1f} GiB needed per device, {:.1f} GiB usable (gpu_memory_utilization of "
                      "{:.1f} GiB)", total, usable, c["capacity_bytes"], per=GIB))]
    checks += cap_checks
    tier_out, tier_checks = offload.tier_results(c, total, tiers)
    out["breakdown.decode.cpu_attention"] = offloaded["breakdown.decode.cpu_attention"]
    out.update(tier_out)
    checks += tier_checks
    # work one device does per phase (prefill) or per step (decode), for the power model
    for phase, parts in (("prefill", pre), ("decode", dec)):
        for key in ("flops", "hbm_bytes", "link_bytes", "nic_bytes"):
            out[f"breakdown.{phase}.{key}"] = parts[key] / c["pp"]
        # each stage's device streams its own offloaded state
        out[f"breakdown.{phase}.nvme_bytes"] = parts["nvme_bytes"]
    inference_results(c, out, checks, pre, dec)  # PIM, engines and per-device busy time
    return out, checks


def _touched_params(c, tokens):
    """``(replicated, experts)`` layer parameters per device that a pass of ``tokens`` tokens reads:
    every replicated weight and the routed experts its tokens pick (a balanced router)."""
    return layer_params_per_device(c, experts_counted=touched_experts(c, tokens * expert_group_scale(c)))


def _hbm_bound(c, seqs, context):
    """Lower bound of a decode step: weights (MoE: the experts the batch touches) + KV cache read
    once at full HBM bandwidth."""
    replicated, experts = _touched_params(c, seqs)
    weights = (replicated + experts) * c["w_bytes"]
    kv = seqs * context * kv_bytes_per_device_token(c)
    return (weights + kv) / c["hbm_bw"]
