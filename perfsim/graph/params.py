"""Parameter counts of a transformer from its shape columns (arrays over configurations).

Counts follow the Hugging Face module layout: embeddings (+ learned positions), per layer the
attention projections (multi-head, grouped-query, multi-query, or DeepSeek's multi-head latent
attention), the MLP (plain 2-matrix or gated 3-matrix; MoE experts, shared experts and router),
norms and biases, then the final norm and the LM head (absent when tied).
"""

from __future__ import annotations

import numpy as np

from perfsim.plan.rows import maximum, minimum, where_one


def attention_params(c):
    """Weights of one attention block (projections, MLA norms, biases)."""
    h, heads, kv, hd = c["hidden"], c["heads"], c["kv_heads"], c["head_dim"]
    standard = h * (heads + 2.0 * kv) * hd + heads * hd * h
    standard = standard + c["attn_bias"] * ((heads + 2.0 * kv) * hd + h)
    qk = c["qk_nope"] + c["qk_rope"]
    q_lora = c["q_lora"]
    q_part = where_one(q_lora > 0, h * q_lora + q_lora * heads * qk + q_lora, h * heads * qk)
    mla = (q_part + h * (c["kv_lora"] + c["qk_rope"]) + c["kv_lora"]
           + c["kv_lora"] * heads * (c["qk_nope"] + c["v_head_dim"]) + heads * c["v_head_dim"] * h)
    return where_one(c["kv_lora"] > 0, mla, standard)


def dense_mlp_params(c, width=None):
    """Weights of a dense MLP of ``width`` (default ``ffn``): 2 or 3 matrices plus biases."""
    ffn = c["ffn"] if width is None else width
    mats = 2.0 + c["gated"]
    return mats * c["hidden"] * ffn + c["mlp_bias"] * ((1.0 + c["gated"]) * ffn + c["hidden"])


def moe_mlp_params(c, experts_counted):
    """Weights of an MoE MLP counting ``experts_counted`` routed experts, shared experts and router."""
    expert = dense_mlp_params(c, c["moe_ffn"])
    return (experts_counted + c["shared_experts"]) * expert + c["hidden"] * c["experts"]


def stage_share(c):
    """Share of the model's transformer layers on the fullest pipeline stage (``1 / pp`` when pp
    divides the layers; ``stage_layers``: :mod:`perfsim.plan.columns`)."""
    return c["stage_layers"] / c["layers"]


def balanced_split(layers: int, pp: int) -> list[int]:
    """Layers per stage of a balanced split of ``layers`` over ``pp`` stages: ``layers // pp`` each,
    the remainder one more on the middle stages first (the first and last also hold the embedding
    and the LM head), as evenly as Megatron-core and torchtitan split a model pp does not divide.
    Its largest count is ``ceil(layers / pp)``, the fullest stage the closed form prices.

    >>> balanced_split(126, 16)
    [7, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 7]
    """
    base, extra = divmod(layers, pp)
    order = list(range(1, pp - 1)) + [0, pp - 1] if pp > 2 else list(range(pp))
    counts = [base] * pp
    for s in order[:extra]:
        counts[s] += 1
    return counts


def layer_counts(c):
    """``(dense_layers, moe_layers)`` per model."""
    dense = minimum(c["dense_layers"], c["layers"])
    return dense, c["layers"] - dense


def embedding_params(c):
    """Input embedding (+ learned positions, + embedding norm)."""
    return c["vocab"] * c["hidden"] + c["pos_rows"] * c["hidden"] + c["embed_norm"] * c["norm_params"] * c["hidden"]


def head_params(c):
    """Final norm and LM head (0 matrix when tied to the embedding)."""
    return c["norm_params"] * c["hidden"] + (1.0 - c["tied"]) * c["vocab"] * c["hidden"] + c["head_bias"] * c["vocab"]


def layer_params(c, *, active: bool = False, experts_counted=None):
    """Weights of all transformer layers; ``active`` counts only the routed experts a token uses,
    ``experts_counted`` (array) any other number of routed experts per MoE layer."""
    dense, moe = layer_counts(c)
    norms = c["norm_params"] * c["hidden"] * (2.0 - c["parallel_block"])
    attn = attention_params(c) + norms
    experts = experts_counted if experts_counted is not None else (c["top_k"] if active else c["experts"])
    return dense * (attn + dense_mlp_params(c)) + moe * (attn + moe_mlp_params(c, experts))


def routed_expert_params(c, experts_counted=None):
    """Weights of the routed experts of all MoE layers (``experts_counted`` per layer, default all)."""
    _, moe = layer_counts(c)
    experts = c["experts"] if experts_counted is None else experts_counted
    return moe * experts * dense_mlp_params(c, c["moe_ffn"])


def expert_tp(c):
    """Tensor-parallel width of each routed expert: expert parallelism is folded over the tp × dp
    × cp ranks of a stage (Megatron-LM's MoE parallel folding), so ``ep`` ranks first take the
    tensor-parallel ranks; what is left of ``tp`` splits each expert."""
    return maximum(c["tp"] / c["ep"], 1.0)


def layer_params_per_device(c, experts_counted=None):
    """``(replicated, experts)``: transformer-layer weights of the fullest pipeline stage held by one device.

    ``replicated`` (attention, dense MLPs, shared experts, router) is split by ``tp`` and copied
    over data-parallel ranks; ``experts`` (``experts_counted`` routed experts per MoE layer,
    default all) is split over ``ep × etp`` (:func:`expert_tp`) and copied over the remaining
    expert-data-parallel ranks.
    """
    share = stage_share(c)
    routed = routed_expert_params(c)
    counted = routed if experts_counted is None else routed_expert_params(c, experts_counted)
    return (layer_params(c) - routed) * share / c["tp"], counted * share / (c["ep"] * expert_tp(c))


def stage_params_per_device(c, stage=None):
    """``(replicated, experts)``: weights of a pipeline stage held by one device — its layers
    (:func:`layer_params_per_device`) plus, split by ``tp``, the embedding on the first stage and
    the final norm and LM head on the last. ``stage`` (array of stage indices) prices those
    stages; by default the busiest one: both ends when ``pp == 1``, else the larger of them."""
    embedding, head = embedding_params(c), head_params(c)
    if stage is None:
        ends = where_one(c["pp"] > 1, maximum(embedding, head), embedding + head)
    else:
        ends = np.where(stage == 0, embedding, 0.0) + np.where(stage == c["pp"] - 1, head, 0.0)
    replicated, experts = layer_params_per_device(c)
    return replicated + ends / c["tp"], experts


def total_params(c, *, active: bool = False):
    """All weights of the model (``active``: per token, MoE counting only the routed top-k)."""
    return embedding_params(c) + layer_params(c, active=active) + head_params(c)
