"""One training step, closed form: micro-batches through a pipeline, then gradient sync and update.

Per stage and micro-batch: forward ``F``, backward ``B`` (input gradients + weight gradients
``W``), recompute ``R`` (full: the forward again; selective: the attention core, or where the
runtime's policy says so, a share of the matmuls and the elementwise ops). The schedule
decides the bubble, for ``n`` micro-batches (``m = max(pp - n, 0)`` too few to fill the
pipeline) and ``I = B + R - W`` the input-gradient part that ZB-H1 keeps on the critical path:

=============  ========================================================================================
gpipe, 1f1b    (pp - 1) · (F + B + R)                                (Huang 2019; Narayanan 2021)
interleaved    (pp - 1 + (v - 1) m) · (F + B + R) / v               (Narayanan 2021, v virtual stages)
zero-bubble    (pp - 1) · max(F + I - W, F, I) + m · min(W, F, I)    (ZB-H1 moves W into the bubble;
               Qi et al. 2024 give the first term for W <= min(F, I))
dualpipe       (pp/2 - 1) · max(F + B + R - 3W, 0)                   (DeepSeek-V3 report, Table 2; F + B
               the pair of chunks whose expert-parallel all-to-alls hide behind each other's compute)
=============  ========================================================================================

These are the bubbles of the timelines of :mod:`perfsim.events.pipeline` on equal stages; the
hand-offs between stages add ``pp - 1`` (interleaved: ``pp · v - 1``) transfers each way.

Context parallelism splits every sequence over ``cp`` ranks (load-balanced causal chunks): each
rank attends its ``seq / cp`` queries to the whole sequence while the K/V chunks travel around
the ring, hidden behind the attention of the chunk at hand (Liu et al. 2023, ring attention); each
step waits for the ring's slowest hop, and the partial results are merged by elementwise kernels
(:func:`perfsim.graph.transformer.ring_merge`).

Data-parallel gradient sync (all-reduce, or reduce-scatter / all-gather under ZeRO, see
:mod:`perfsim.analytical.data_parallel`) hides behind compute where the runtime overlaps it, but never behind more
compute than there is: what exceeds the forward+backward it overlaps, and the last layer's
bucket, stay exposed. The optimizer step streams its states
through HBM. Activation memory follows Korthikanti et al. 2022 (eqs. 1-2 and sec. 4-5),
generalised to grouped-query attention, gated MLPs, flash attention and no dropout.
"""

from __future__ import annotations

import numpy as np

from perfsim.analytical import offload
from perfsim.analytical.data_parallel import data_parallel, dp_traffic
from perfsim.cost.power import cap_passes
from perfsim.cost.price import combine, price_segments
from perfsim.cost.topology import group_collective, nic_bytes
from perfsim.graph.params import expert_tp, layer_counts, layer_params, stage_params_per_device, stage_share
from perfsim.graph.transformer import Pass, capacity_scale, embedding_ops, kv_bytes_per_token, layer_ops, lm_head_ops
from perfsim.plan.arguments import Recompute, Schedule
from perfsim.plan.rows import Detail, any_row, floats, maximum, minimum, numeric, where_one
from perfsim.specs.units import GIB

_ADAM_BYTES = 12.0  # fp32 master weights + two fp32 moments (mixed precision, Micikevicius et al. 2018)
_DUALPIPE_COMM_UNITS = 20.0  # SMs DeepSeek-V3's all-to-all kernels hold (report sec. 3.2.2)
_OPTIMIZER_TRAFFIC = 36.0  # bytes per parameter per Adam step: read+write master, m, v (24), read grad (4+), write weight
#: the choices' codes as the columns hold them: a float compares with a column's number in nanoseconds,
#: an enum member only after NumPy converts it (microseconds, dozens of times a step)
_SELECTIVE, _FULL = float(Recompute.SELECTIVE), float(Recompute.FULL)
_GPIPE, _INTERLEAVED, _ZERO_BUBBLE, _DUALPIPE = (float(s) for s in (Schedule.GPIPE, Schedule.INTERLEAVED,
                                                                   Schedule.ZERO_BUBBLE, Schedule.DUALPIPE))


def _stage_passes(c, p):
    """Price one micro-batch on one stage, forward and backward: ``(layers, embedding, lm_head)``
    price dicts of each, the layers being the fullest stage's share of the model's (``1 / pp`` when
    pp divides them). Both passes price the same op lists (each op holds its gradient's fields)."""
    dense, moe = layer_counts(c)
    per_stage = stage_share(c)
    layers = [(dense * per_stage, layer_ops(c, p, moe=False))]
    if any_row(moe > 0):
        layers.append((moe * per_stage, layer_ops(c, p, moe=True)))
    lists = [ops for _, ops in layers] + [embedding_ops(c, p), lm_head_ops(c, p)]
    # (both passes in one call: the ops of a kind, forward and gradient, priced together)
    both, n = price_segments(c, lists + lists, backward=[False] * len(lists) + [True] * len(lists)), len(lists)
    return [(combine(*zip([w for w, _ in layers], priced[:-2], strict=True)), *priced[-2:])
            for priced in (both[:n], both[n:])]


def micro_pass(c) -> Pass:
    """The forward pass of one micro-batch on one replica (context parallelism: a rank's share of
    each sequence's queries, attending the whole sequence)."""
    mb, seq, cp = c["micro_batch"], c["seq_len"], c["cp"]
    one = np.ones_like(floats(mb * seq))
    q_len = seq / cp
    return Pass(tokens=mb * q_len, seqs=mb, q_len=q_len, kv_len=seq, causal=where_one(cp > 1, 0.5, 1.0) * one,
                logits_tokens=mb * q_len)


def stage_prices(c, weights=None) -> dict:
    """What :func:`stage_times` prices that does not read the recomputation (which only decides
    what it charges again), so that a search over it prices these once: ``forward`` and
    ``backward`` (:func:`_stage_passes` of one micro-batch), ``ring_s`` and ``handoff_s`` (the
    context-parallel ring's K/V passing per micro-batch, one hand-off between stages) and
    ``dp_groups`` and ``dp_traffic`` (:func:`_dp_groups`, and
    :func:`perfsim.analytical.data_parallel.dp_traffic` of each)."""
    p = micro_pass(c)
    cp = c["cp"]
    # context parallelism (ring attention, load-balanced causal chunks): every layer passes its
    # K/V chunk around the cp ring in cp - 1 steps (backward: K/V and their gradients), each step
    # overlapped with the attention of the chunk already there. Every rank sends to the next at once
    # and the step ends with the slowest hop: one between nodes where the cp group spans nodes
    ring = cp > 1
    ring_step = group_collective(c, "send_recv", p.tokens * kv_bytes_per_token(c), cp, stride=c["tp"]) \
        if any_row(ring) else 0.0  # (no ring on any row: its terms are 0 below, whatever a hop would cost)
    staged = where_one(c["pp"] > 1, 1.0, 0.0)  # (one stage on every row: no hand-off, a valid spec's hop being finite)
    handoff = group_collective(c, "send_recv", p.tokens * c["hidden"] * c["act_bytes"], 2.0,
                               stride=c["tp"] * cp * c["dp"]) * staged if any_row(staged > 0) else 0.0 * staged
    groups = _dp_groups(c, weights)
    forward, backward = _stage_passes(c, p)
    return {"forward": forward, "backward": backward,
            "ring_s": where_one(ring, (cp - 1.0) * ring_step * c["stage_layers"], 0.0), "handoff_s": handoff,
            "dp_groups": groups, "dp_traffic": [None if g is None else dp_traffic(c, *g) for g in groups]}


def _dp_groups(c, weights=None):
    """``(trainable, weights, ranks, stride)`` of the data-parallel gradient synchronisation of the
    replicated weights (over the dp x cp ranks) and of the routed experts (over the
    expert-data-parallel ranks; None where no row has any), ZeRO sharding each in groups of
    zero_shard_size; ``weights``: :func:`stage_times`'s."""
    replicated, experts = stage_params_per_device(c) if weights is None else weights
    lora = c["lora"] > 0
    lora_dev = _lora_params(c) * stage_share(c) / c["tp"]
    ranks = c["dp"] * c["cp"]
    expert_ranks = c["tp"] * ranks / (c["ep"] * expert_tp(c))
    dense = (where_one(lora, lora_dev, replicated), replicated, ranks, c["tp"])
    # (no expert weights: every term of their synchronisation is 0)
    expert = (np.where(lora, 0.0, experts), experts, expert_ranks, c["ep"] * expert_tp(c)) if any_row(experts) else None
    return dense, expert


def stage_times(c, weights=None, prices=None):
    """Per-stage quantities of one training step: the durations both compositions use.

    :func:`estimate_train` composes them in closed form; :mod:`perfsim.events.pipeline`
    schedules them on a timeline. Either way they are priced here, once.

    Parameters
    ----------
    c : dict
        Columns of :func:`perfsim.plan.columns.build` (arrays over configurations).
    weights : tuple of arrays, optional
        ``(replicated, experts)`` parameters per device of the stage(s) whose data-parallel
        traffic and optimizer step are priced (:func:`perfsim.graph.params.stage_params_per_device`;
        arrays broadcast, so a trailing stage axis prices every stage at once). Default: the
        busiest stage.
    prices : dict, optional
        :func:`stage_prices` of ``c`` and ``weights`` (or of columns that differ from ``c`` in the
        recomputation only).

    Returns
    -------
    dict
        Per micro-batch on one stage, in seconds: ``forward_s``, ``backward_s`` (input and weight
        gradients; LoRA: input only), ``wgrad_s`` (its weight-gradient part), ``recompute_s``,
        each charged with the stage's layers plus the embedding and the LM head, as the closed
        form charges the busiest stage; their parts ``{layers,embedding,lm_head}_{forward,backward,
        wgrad}_s`` (context-parallel exposure in the layers'); ``handoff_s``, one activation or
        gradient transfer between neighbouring stages (0 when ``pp == 1``). Per step:
        ``n_micro`` micro-batches, ``dp_per_micro_s`` and ``dp_per_step_s`` (data-parallel traffic
        of every micro-batch and once per step, :func:`perfsim.analytical.data_parallel.data_parallel`), ``optimizer_s``,
        ``buckets`` (gradient buckets: layers per stage), ``dp_overlap``, ``dp_unhidden_s`` (host time of
        list collectives per step, which the device waits through) and ``step_overhead_s`` (with it).
        Internals for the closed form's breakdown: ``pass``, ``prices``, ``ring_s``,
        ``cp_exposed_s``, ``data_parallel``, ``lora_params_per_device``.
    """
    mb = c["micro_batch"]
    dp = c["dp"]
    p = micro_pass(c)
    lora = c["lora"] > 0
    prices = stage_prices(c, weights) if prices is None else prices
    forward, backward = prices["forward"], prices["backward"]
    f_layers, b_layers = forward[0], backward[0]
    ring = prices["ring_s"]
    exposed = (maximum(ring - f_layers["attention_s"], 0.0), maximum(2.0 * ring - b_layers["attention_s"], 0.0))
    out = {"pass": p, "ring_s": ring, "cp_exposed_s": exposed[0] + exposed[1],
           "prices": {"forward": forward, "backward": backward}}
    for key in ("forward_s", "backward_s", "wgrad_s"):
        out[key] = 0.0
    for i, part in enumerate(("layers", "embedding", "lm_head")):
        f, b = forward[i], backward[i]
        cp_f, cp_b = exposed if part == "layers" else (0.0, 0.0)
        times = {"forward_s": f["total_s"] + cp_f,
                 # LoRA: frozen base weights need no weight gradients
                 "backward_s": b["total_s"] + cp_b - where_one(lora, b["wgrad_s"], 0.0),
                 "wgrad_s": where_one(lora, 0.0, b["wgrad_s"])}
        for key, value in times.items():
            out[f"{part}_{key}"] = value
            out[key] = out[key] + value
    sac = c["sac_matmuls"]
    selective = where_one(sac > 0, sac * f_layers["gemm_s"] + f_layers["elementwise_s"], f_layers["attention_s"])
    out["recompute_s"] = np.where(c["recompute"] == _FULL, f_layers["total_s"], np.where(c["recompute"] == _SELECTIVE, selective, 0.0))
    out["n_micro"] = c["global_batch"] / (dp * mb)
    out["handoff_s"] = prices["handoff_s"]

    # data-parallel gradient synchronisation: replicated weights and routed experts
    lora_dev = _lora_params(c) * stage_share(c) / c["tp"]
    parts = [data_parallel(c, *group, out["n_micro"], traffic)
             for group, traffic in zip(prices["dp_groups"], prices["dp_traffic"], strict=True) if group is not None]
    data_par = parts[0] if len(parts) == 1 else {k: parts[0][k] + parts[1][k] for k in parts[0]}
    # host time of list collectives (one copy per rank), which the device waits through
    unhidden = out["n_micro"] * data_par["host_per_micro_s"] + data_par["host_per_step_s"]
    out.update(data_parallel=data_par, lora_params_per_device=lora_dev, dp_per_micro_s=data_par["per_micro_s"],
               dp_per_step_s=data_par["per_step_s"], dp_overlap=c["dp_overlap"], dp_unhidden_s=unhidden,
               step_overhead_s=c["step_overhead_s"] + unhidden,
               optimizer_s=data_par["optimizer_params"] * _OPTIMIZER_TRAFFIC / (c["hbm_bw"] * c["memory_max"]),
               buckets=maximum(c["stage_layers"], 1.0))
    return out


def _per_micro(c, t, key):
    """``key`` of one micro-batch's passes: forward, backward and the recomputed forward."""
    (f_layers, f_embed, f_head), (b_layers, b_embed, b_head) = t["prices"]["forward"], t["prices"]["backward"]
    return (f_layers[key] + b_layers[key] + f_embed[key] + f_head[key] + b_embed[key] + b_head[key]
            + np.where(c["recompute"] == _FULL, f_layers[key], 0.0))


def dualpipe_pairing(c, t):
    """Factor on a micro-batch's pass times under DualPipe (1 under other schedules).

    DualPipe (DeepSeek-V3 report, sec. 3.2.1) runs the forward chunk of one micro-batch beside the
    backward chunk of another, each one's expert-parallel all-to-alls beside the other's compute;
    the pair takes the longer of the two streams, the compute slowed by the SMs the all-to-all
    kernels hold while they run (sec. 3.2.2: 20 of the H800's 132). Its bubble counts such pairs.
    """
    ep = _per_micro(c, t, "ep_communication_s")
    per_mb = t["forward_s"] + t["backward_s"] + t["recompute_s"]
    held = minimum(_DUALPIPE_COMM_UNITS, c["units"] / 2.0)
    paired = np.maximum(per_mb - ep + ep * held / (c["units"] - held), ep)
    return np.where((c["schedule"] == _DUALPIPE) & (ep > 0), paired / np.maximum(per_mb, 1e-30), 1.0)


def _pipeline(t, c):
    """``(bubble_s, handoffs)``: idle time of a stage and exposed hand-off pairs (activation
    forward, gradient back) in one step of ``n`` micro-batches on ``pp`` stages.

    The bubbles are those of the timelines of :mod:`perfsim.events.pipeline` on equal stages: the
    interleaved schedule's ``(pp - 1) / v`` grows by ``(v - 1) / v`` per micro-batch short of
    ``pp``; ZB-H1's ``(pp - 1)(F + B - W)`` (``B`` the input-gradient part, recompute included)
    holds while ``W <= min(F, B)`` and never falls below ``(pp - 1) max(F, B)`` (the last stage
    waits ``(pp - 1) F`` for its first forward; the first stage waits for the gradients to come
    back), and grows by ``min(W, F, B)`` per micro-batch short of ``pp``.
    """
    F, B, W, R = t["forward_s"], t["backward_s"], t["wgrad_s"], t["recompute_s"]
    n, pp, v, sched = t["n_micro"], c["pp"], c["virtual_stages"], c["schedule"]
    per_mb = F + B + R
    b_input = B + R - W  # the backward's critical part when weight gradients are deferred
    short = maximum(pp - n, 0.0)  # micro-batches too few to fill the pipeline
    # (np.select's values: the first schedule that matches, else gpipe/1f1b; without its broadcasting)
    bubble = np.where(sched == _INTERLEAVED, ((pp - 1.0) + (v - 1.0) * short) * per_mb / v,
                      np.where(sched == _ZERO_BUBBLE, (pp - 1.0) * np.maximum(np.maximum(per_mb - 2.0 * W, F), b_input)
                               + short * np.minimum(np.minimum(W, F), b_input),
                               np.where(sched == _DUALPIPE,
                                        maximum(pp / 2.0 - 1.0, 0.0) * maximum(per_mb - 3.0 * W, 0.0),
                                        (pp - 1.0) * per_mb)))
    # hand-offs on the fill and drain: pp - 1, or pp·v - 1 through the chunks of an interleaved
    # pipeline. Equal stages would also wait for hand-offs in the 1F1B and ZB-H1 steady state; a
    # model's last stage (LM head and loss) paces that state and the others' slack hides them
    handoffs = where_one((sched == _INTERLEAVED) & (v > 1), pp * v - 1.0, pp - 1.0)
    return bubble, handoffs


def estimate_train(c, prices=None):
    """Training-step results as a flat dict of arrays, plus ``(mask, reason, detail)`` checks;
    ``prices``: :func:`stage_prices` where the caller has them."""
    t = stage_times(c, prices=prices)
    mb, seq = c["micro_batch"], c["seq_len"]
    dp = c["dp"]
    p = t["pass"]
    lora = c["lora"] > 0
    f_layers, b_layers = t["prices"]["forward"][0], t["prices"]["backward"][0]
    n_micro = t["n_micro"]
    scale = dualpipe_pairing(c, t)
    F, B, R = t["forward_s"] * scale, t["backward_s"] * scale, t["recompute_s"] * scale
    per_mb = F + B + R
    bubble, handoffs = _pipeline({**t, "forward_s": F, "backward_s": B, "recompute_s": R,
                                  "wgrad_s": t["wgrad_s"] * scale}, c)
    p2p = 2.0 * t["handoff_s"]
    pipeline = n_micro * per_mb + bubble + handoffs * p2p

    data_par = t["data_parallel"]
    per_micro, per_step = t["dp_per_micro_s"], t["dp_per_step_s"]
    # overlap is bounded by the compute it hides behind: a micro-batch's gathers and reduce-scatters
    # behind its forward+backward, the once-per-step gradient all-reduce behind the last backward;
    # the last layer's bucket always waits (it is produced when there is no compute left)
    overlap = c["dp_overlap"]
    layers_stage = t["buckets"]

    def exposed(comm, window):
        return maximum(comm - overlap * window, 0.0) + overlap * minimum(comm / layers_stage, comm)

    exposed_sync = n_micro * exposed(per_micro, per_mb) + exposed(per_step, B) + t["dp_unhidden_s"]
    sync_total = n_micro * per_micro + per_step + t["dp_unhidden_s"]
    opt_params = data_par["optimizer_params"]
    optimizer = t["optimizer_s"]
    # offloaded optimizer, gradients, weights, activations (perfsim.analytical.offload)
    # an fp16 engine's optimizer also holds an fp32 copy of its gradient shard (``main_grad_bytes``)
    state_bytes = where_one(c["compute_bytes"] >= 4, 8.0, _ADAM_BYTES + c["main_grad_bytes"])
    if any_row(c["offloaded"] > 0):
        off = offload.train_times(c, weight_bytes=data_par["weight_bytes"], grad_bytes=data_par["grad_bytes"],
                                  optimizer_params=opt_params, state_bytes=state_bytes,
                                  activation_bytes=_activation_bytes(c, 1.0), forward_s=F, backward_s=B + R,
                                  micro_batches=n_micro, optimizer_traffic=_OPTIMIZER_TRAFFIC,
                                  device_optimizer_s=optimizer)
    else:  # nothing leaves the device: what train_times gives for all-device fractions
        off = {"optimizer_s": optimizer, "host_optimizer_s": 0.0, "offload_s": 0.0, "transfer_s": 0.0,
               "host_cpu_s": 0.0, "nvme_bytes": 0.0}
    optimizer = off["optimizer_s"]
    step = pipeline + exposed_sync + optimizer + c["step_overhead_s"] + off["offload_s"]

    # FLOPs (Megatron convention: 3 x forward matmul FLOPs, full s x s attention square)
    tokens = c["global_batch"] * seq
    matmul_params = layer_params(c, active=True) + (c["vocab"] * c["hidden"])
    attn_dims = where_one(c["kv_lora"] > 0, c["qk_nope"] + c["qk_rope"] + c["v_head_dim"], 2.0 * c["head_dim"])
    attn_flops_tok = 2.0 * seq * c["heads"] * attn_dims * c["layers"]
    fwd_tok = 2.0 * matmul_params + attn_flops_tok - 2.0 * _norm_bias_params(c)
    model_flops = 3.0 * tokens * fwd_tok
    model_flops = where_one(lora, tokens * fwd_tok * 2.0, model_flops)
    layer_fwd_tok = fwd_tok - 2.0 * c["vocab"] * c["hidden"]
    sac = c["sac_matmuls"]
    selective_flops = where_one(sac > 0, sac * (layer_fwd_tok - attn_flops_tok), attn_flops_tok)
    recompute_flops = tokens * np.where(c["recompute"] == _FULL, layer_fwd_tok,
                                        np.where(c["recompute"] == _SELECTIVE, selective_flops, 0.0))
    hardware_flops = model_flops + recompute_flops
    devices = c["num_devices"]
    peak = c["peak_flops"]
    traffic = _step_traffic(c, p, n_micro, R, t["prices"], data_par)
    # a power cap lowers the clock of the step (perfsim.cost.power): no-op without
    span = _step_span(c, t, step, per_mb, bubble, hardware_flops / devices, traffic)
    span["overhead_s"] = c["step_overhead_s"]  # host time in the step (perfsim.cost.power.gap_floor)
    cap_checks = cap_passes(c, {"the training step": span})
    step = span["total_s"]

    out = {
        "step_time_s": step,
        "tokens_per_s": tokens / step,
        "model_flops_per_step": model_flops,
        "mfu": model_flops / (step * devices * peak),
        "hfu": hardware_flops / (step * devices * peak),
        "model_tflops_per_device": model_flops / (step * devices) / 1e12,
        "hardware_tflops_per_device": hardware_flops / (step * devices) / 1e12,
        "bubble_fraction": bubble / step,
        "breakdown.train.forward_s": n_micro * F,
        "breakdown.train.backward_s": n_micro * B,
        "breakdown.train.recompute_s": n_micro * R,
        "breakdown.train.bubble_s": bubble,
        "breakdown.train.pipeline_p2p_s": handoffs * p2p,
        "breakdown.train.tp_communication_s": n_micro * (_per_micro(c, t, "communication_s")
                                                         - _per_micro(c, t, "ep_communication_s")),
        "breakdown.train.ep_communication_s": n_micro * _per_micro(c, t, "ep_communication_s"),
        "breakdown.train.cp_communication_s": n_micro * 3.0 * t["ring_s"],
        "breakdown.train.cp_exposed_s": n_micro * t["cp_exposed_s"],
        "breakdown.train.dp_communication_s": sync_total,
        "breakdown.train.dp_exposed_s": exposed_sync,
        "breakdown.train.optimizer_s": optimizer,
        "breakdown.train.host_optimizer_s": off["host_optimizer_s"],
        "breakdown.train.offload_s": off["offload_s"],
        "breakdown.train.transfer_s": off["transfer_s"],
        "breakdown.train.host_cpu_s": off["host_cpu_s"] + 0.0 * step,
        "breakdown.train.nvme_bytes": off["nvme_bytes"] + 0.0 * step,
        "breakdown.train.overhead_s": c["step_overhead_s"] + 0.0 * step,
        "breakdown.train.gemm_s": n_micro * sum(d["gemm_s"] for phase in t["prices"].values() for d in phase),
        "breakdown.train.attention_s": n_micro * (f_layers["attention_s"] + b_layers["attention_s"]),
        "breakdown.train.micro_batches": n_micro,
        "breakdown.train.flops": span["flops"],
    }
    for key in ("compute_bound_s", "memory_bound_s", "throttle_s", "clock_ratio"):
        if key in span:
            out[f"breakdown.train.{key}"] = span[key]
    # memory per device (first stage: most activations in flight, plus the embedding)
    weights = data_par["weight_bytes"] + where_one(lora, t["lora_params_per_device"] * c["act_bytes"], 0.0)
    grads = data_par["grad_bytes"]
    optimizer_mem = opt_params * state_bytes
    activations = _activation_bytes(c, n_micro)
    tiers = offload.train_memory(c, weights, grads, optimizer_mem, activations, opt_params)
    weights, grads, optimizer_mem, activations = (tiers["gpu"][k] for k in ("weights", "gradients", "optimizer",
                                                                             "activations"))
    other = c["fragmentation"] * activations + tiers["staging"]
    total = weights + grads + optimizer_mem + activations + other
    mem = {"weights": weights, "gradients": grads, "optimizer": optimizer_mem,
           "model_states": weights + grads + optimizer_mem, "activations": activations, "kv_cache": 0.0 * weights,
           "other": other, "total": total, "capacity": c["capacity_bytes"]}
    for key, value in mem.items():
        out[f"memory_per_device_gib.{key}"] = value / GIB
    cap = c["capacity_bytes"]
    checks = [
        (np.abs(n_micro - np.round(n_micro)) > 1e-9, "global_batch is not a multiple of dp x micro_batch",
         Detail("global_batch ({:.0f}) is not a multiple of dp x micro_batch ({:.0f} x {:.0f})", c["global_batch"], dp,
                mb)),
        (n_micro < 1, "fewer sequences than dp x micro_batch", None),
        (numeric(seq) % numeric(c["cp"]) != 0, "cp does not divide seq_len", None),
        (total > cap, "does not fit in device memory",
         Detail(_does_not_fit, total, cap, c["tp"], c["pp"], c["zero"])),
    ]
    tier_out, tier_checks = offload.tier_results(c, total, tiers)
    out.update(tier_out)
    checks += tier_checks + cap_checks
    out.update(traffic)
    return out, checks


def _step_span(c, t, step, per_mb, bubble, flops, traffic):
    """One training step as a span of work for the power-cap model.

    Its compute-bound and memory-bound parts are those of a micro-batch's passes (the recompute
    as a share of the forward), over every micro-batch slot a stage spends computing or waiting
    in the bubble (the other stages run the same passes at the same clock); the data-parallel
    sync, the optimizer step and host overheads do not scale with the clock.
    """
    prices = [d for phase in t["prices"].values() for d in phase]
    f_layers = t["prices"]["forward"][0]
    recompute = t["recompute_s"] / maximum(f_layers["total_s"], 1e-30)
    slots = (t["n_micro"] * per_mb + bubble) / np.maximum(per_mb, 1e-30)

    def part(key):
        return slots * (sum(d[key] for d in prices) + recompute * f_layers[key])

    return {"total_s": step, "compute_bound_s": part("compute_bound_s"), "memory_bound_s": part("memory_bound_s"),
            "memory_compute_s": part("memory_compute_s"), "flops": flops,
            "hbm_bytes": traffic["breakdown.train.hbm_bytes"], "link_bytes": traffic["breakdown.train.link_bytes"]}


def _does_not_fit(total, cap, tp, pp, zero) -> str:
    """The message of a plan that does not fit (one row's numbers), with what shards it further: the
    degrees still at 1, ZeRO below 3."""
    raise_ = [name for name, degree in (("tp", tp), ("pp", pp)) if degree == 1]
    if zero < 3:
        raise_.append("zero (3 shards the weights)")
    return f"does not fit: {total / GIB:.1f} GiB needed per device, {cap / GIB:.1f} GiB available" + \
        (f" (shard more: raise {', '.join(raise_)})" if raise_ else "")


def _step_traffic(c, p, n_micro, R, prices, data_par):
    """Device-memory, fabric and NIC bytes of one device in one step (for the power model).

    Micro-batch passes (recompute scaled from the forward by its time), the optimizer's state
    traffic, the data-parallel collectives (``data_par``: bytes sent and sent over the NIC, from
    :func:`perfsim.analytical.data_parallel.data_parallel`) and the pipeline hand-offs; a collective reads what it sends and
    writes what it receives.
    """
    f_layers = prices["forward"][0]
    recompute_share = R / maximum(f_layers["total_s"], 1e-30)
    sent = {}
    for key in ("hbm_bytes", "link_bytes", "nic_bytes"):
        passes = sum(d[key] for phase in prices.values() for d in phase)
        sent[key] = n_micro * (passes + recompute_share * f_layers[key])
    hand_off = p.tokens * c["hidden"] * c["act_bytes"]
    pipelined = where_one(c["pp"] > 1, 2.0 * n_micro, 0.0)  # an activation forward, a gradient back
    p2p = pipelined * hand_off
    # the context-parallel ring: a K/V chunk per step and layer forward (and recomputed), K/V and
    # their gradients backward
    chunk = p.tokens * kv_bytes_per_token(c)
    rings = n_micro * (3.0 + recompute_share) * maximum(c["cp"] - 1.0, 0.0) * c["stage_layers"]
    dp_sent = data_par["sent_bytes"]
    link = sent["link_bytes"] + dp_sent + p2p + rings * chunk
    hbm = sent["hbm_bytes"] + data_par["optimizer_params"] * _OPTIMIZER_TRAFFIC + 2.0 * (dp_sent + p2p + rings * chunk)
    nic = sent["nic_bytes"] + data_par["nic_bytes"] + rings * nic_bytes(c, "send_recv", chunk, c["cp"], stride=c["tp"]) \
        + pipelined * nic_bytes(c, "send_recv", hand_off, 2.0, stride=c["tp"] * c["cp"] * c["dp"])
    return {"breakdown.train.hbm_bytes": hbm, "breakdown.train.link_bytes": link, "breakdown.train.nic_bytes": nic}


def _norm_bias_params(c):
    """Norm weights and biases: parameters that are not matmul weights (excluded from matmul FLOPs)."""
    h = c["hidden"]
    per_layer = c["norm_params"] * h * (2.0 - c["parallel_block"])
    biases = c["attn_bias"] * ((c["heads"] + 2.0 * c["kv_heads"]) * c["head_dim"] + h) \
        + c["mlp_bias"] * ((1.0 + c["gated"]) * c["ffn"] + h)
    return c["layers"] * (per_layer + biases) + c["norm_params"] * h


def _lora_params(c):
    """Adapter weights of rank ``lora_rank`` on q, k, v, o and the MLP projections of every layer."""
    h, r = c["hidden"], c["lora_rank"]
    qkv_out = (c["heads"] + 2.0 * c["kv_heads"]) * c["head_dim"]
    attn = r * (h + qkv_out) + r * (c["heads"] * c["head_dim"] + h)
    ffn = maximum(c["ffn"], c["moe_ffn"])
    mlp = (1.0 + c["gated"]) * r * (h + ffn) + r * (ffn + h)
    return c["layers"] * (attn + mlp)


def _activation_bytes(c, n_micro):
    """Activation memory of the first pipeline stage (Korthikanti et al. 2022, generalised).

    Per layer and token (bytes, 16-bit activations, ``t`` = tp): tensors replicated across TP
    unless sequence parallelism shards them (layer-norm inputs 4h, attention/MLP inputs 2h each,
    dropout masks h each), tensors split by TP (Q, K, V, attention output, MLP intermediates),
    and with eager attention the s×s scores (softmax 2as, dropout mask as and output 2as per
    token). Selective recompute drops the s×s terms; full recompute keeps only each layer's input.
    An op-level selective policy (runtime ``selective_recompute_matmuls``: torchtitan's ``op`` AC,
    which recomputes every second matmul and every elementwise op) keeps the layer's input, the
    attention output and the outputs of the matmuls it does not recompute. The loss holds
    ``loss_bytes_per_logit`` bytes per token and vocabulary entry on the last stage (4: fp32 logits,
    Korthikanti et al. sec. 4; more where the engine keeps 16-bit logits and an fp32 copy).
    """
    h, t = c["hidden"], c["tp"]
    a = c["act_bytes"]
    s = c["seq_len"] / c["cp"]
    heads, hd, kv = c["heads"], c["head_dim"], c["kv_heads"]
    drop = c["dropout"]
    replicated = (4.0 + 2.0 + 2.0) * h * a / 2.0 + 2.0 * drop * h  # norms 4h, attn/MLP inputs 2h each (16-bit), masks
    # MoE: routed experts hold their (padded, under a capacity factor) buffers, shared experts their tokens
    ffn = where_one(c["experts"] > 0, c["moe_ffn"] * (c["top_k"] * capacity_scale(c) + c["shared_experts"]), c["ffn"])
    split = ((heads + 2.0 * kv) * hd + heads * hd) * a + (2.0 + c["gated"]) * ffn * a
    scores = (1.0 - c["flash"]) * heads * c["seq_len"] * (a + drop * (1.0 + a))
    scores = np.where(c["recompute"] >= _SELECTIVE, 0.0, scores)
    per_token = replicated / where_one(c["sp"] > 0, t, 1.0) + (split + scores) / t
    # op-level selective recompute: the matmul outputs it keeps (q, k, v, o; the MLP's up, gate, down)
    matmul_out = ((heads + 2.0 * kv) * hd + h + (1.0 + c["gated"]) * ffn + h) * a
    op_level = h * a / where_one(c["sp"] > 0, t, 1.0) + (heads * hd * a + (1.0 - c["sac_matmuls"]) * matmul_out) / t
    per_token = np.where((c["recompute"] == _SELECTIVE) & (c["sac_matmuls"] > 0), op_level, per_token)
    full = 2.0 * h / where_one(c["sp"] > 0, t, 1.0)
    per_token = np.where(c["recompute"] == _FULL, full, per_token)
    tokens = c["micro_batch"] * s
    per_layer = tokens * per_token
    pp, v = c["pp"], c["virtual_stages"]
    layers_stage = c["stage_layers"]
    in_flight = where_one(c["schedule"] == _GPIPE, n_micro, minimum(n_micro, pp))
    factor = where_one(c["schedule"] == _INTERLEAVED, 1.0 + (pp - 1.0) / (pp * v), 1.0)
    held = layers_stage * in_flight * factor * per_layer
    # full recompute re-materialises one layer's activations during its backward
    working = where_one(c["recompute"] == _FULL, tokens * ((replicated / where_one(c["sp"] > 0, t, 1.0)) + (split + (1.0 - c["flash"]) * heads * c["seq_len"] * (a + drop * (1.0 + a))) / t), 0.0)
    logits = tokens * c["vocab"] / t * c["loss_bytes"] * where_one(pp > 1, 0.0, 1.0)
    return held + working + logits
