"""The last stage of a training step: the LM head stays in the 16-bit format in 8-bit recipes where
the engine keeps it out of its fp8 autocast (runtime ``lm_head_16bit``), and the loss's kernels stream the logits as many
times as the engine's cross entropy reads and writes them (runtime ``loss_*_bytes_per_logit``)."""

import numpy as np
import pytest

from perfsim.cost.price import price
from perfsim.graph.transformer import Pass, lm_head_ops
from perfsim.plan.columns import build
from perfsim.plan.grid import expand


def _config(**kw):
    return build(expand({"model": "llama3-8b", "hardware": "h100-sxm", "mode": "train", "num_devices": 8,
                         "seq_len": 4096, "global_batch": 8, "runtime": "megatron", **kw}))


def _micro_batch(tokens):
    return Pass(tokens=tokens, seqs=1.0, q_len=tokens, kv_len=tokens, causal=1.0, logits_tokens=tokens)


def _op(c, p, name):
    return [op for op in lm_head_ops(c, p) if op.name == name]


@pytest.mark.parametrize("backward", [False, True])
def test_fp8_training_runs_the_lm_head_at_the_16_bit_rate(backward):
    """The same LM head GEMM (4096 tokens x 128256 / 8 vocabulary x 4096) takes the same time in an
    fp8 step as in a bf16 step, and half the FLOP rate of the fp8 GEMMs' peak would allow."""
    p = _micro_batch(4096.0)
    fp8, bf16 = _config(dtype="fp8", tp=8), _config(dtype="bf16", tp=8)
    head8 = price(fp8, _op(fp8, p, "lm_head"), backward=backward)
    head16 = price(bf16, _op(bf16, p, "lm_head"), backward=backward)
    assert float(head8["gemm_s"]) == pytest.approx(float(head16["gemm_s"]), rel=1e-12)
    assert float(head8["elementwise_s"]) == 0.0  # no fp8 cast of its input or output gradient
    assert float(head8["flops"]) == pytest.approx(float(head16["flops"]), rel=1e-12)


def test_megatron_loss_moves_38_and_14_bytes_per_logit():
    """Megatron-core's unfused vocab-parallel cross entropy on 4096 tokens of a TP-2 shard of Llama 3's
    128,256 entries: 38 bytes per logit forward, 14 backward, in 6 and 2 kernels."""
    c = _config(dtype="bf16", tp=2)
    p = _micro_batch(4096.0)
    (loss,) = _op(c, p, "loss")
    logits = 4096.0 * 128256 / 2
    fwd, bwd = price(c, [loss]), price(c, [loss], backward=True)
    assert float(fwd["hbm_bytes"]) == pytest.approx(38.0 * logits)
    assert float(bwd["hbm_bytes"]) == pytest.approx(14.0 * logits)
    launch = float(c["launch_s"])
    bw = float(c["hbm_bw"] * c["memory_max"])
    assert float(fwd["elementwise_s"]) == pytest.approx(38.0 * logits / bw + 6 * launch, rel=1e-9)
    assert float(bwd["elementwise_s"]) == pytest.approx(14.0 * logits / bw + 2 * launch, rel=1e-9)


def test_inference_has_no_loss_and_fused_loss_moves_less():
    """Inference computes no loss; NeMo's fused loss (22 + 6 bytes) moves less than Megatron's unfused
    one (38 + 14) for the same logits; an engine without the keys reads and writes them once."""
    p = _micro_batch(1024.0)
    infer = _config(mode="inference", batch=1, prompt_len=1024)
    assert float(price(infer, _op(infer, p, "loss"))["hbm_bytes"]) == 0.0
    moved = {}
    for runtime in ("megatron", "nemo", "torchtitan"):
        c = _config(runtime=runtime)
        loss = _op(c, p, "loss")
        moved[runtime] = float(price(c, loss)["hbm_bytes"] + price(c, loss, backward=True)["hbm_bytes"])
    logits = 1024.0 * 128256
    assert moved["megatron"] == pytest.approx(52.0 * logits)
    assert moved["nemo"] == pytest.approx(28.0 * logits)
    assert moved["torchtitan"] == pytest.approx(4.0 * logits)
    assert np.isfinite(list(moved.values())).all()


def test_training_keeps_logits_vocab_parallel():
    """TP 4 training gathers no logits: the loss all-reduces 12 bytes per token forward and the head's
    input gradient (tokens x hidden x 2 bytes) backward; inference gathers the fp32 logits instead."""
    from perfsim.cost.topology import group_collective
    p = _micro_batch(4096.0)
    c = _config(dtype="bf16", tp=4)
    comms = [op for op in lm_head_ops(c, p) if op.name in ("tp_logits", "tp_loss")]
    fwd, bwd = price(c, comms), price(c, comms, backward=True)
    exposed = 1.0 - float(c["tp_overlap"])  # the engine's hidden share of tensor-parallel traffic
    assert float(fwd["communication_s"]) == pytest.approx(
        exposed * float(group_collective(c, "all_reduce", 4096.0 * 12, 4.0)))
    assert float(bwd["communication_s"]) == pytest.approx(
        exposed * float(group_collective(c, "all_reduce", 4096.0 * 4096 * 2, 4.0)))
    infer = _config(mode="inference", batch=1, prompt_len=1024, tp=4)
    comms = [op for op in lm_head_ops(infer, p) if op.name in ("tp_logits", "tp_loss")]
    assert float(price(infer, comms)["communication_s"]) == pytest.approx(
        (1.0 - float(infer["tp_overlap"])) * float(group_collective(infer, "all_gather", 4096.0 * 128256 * 4, 4.0)))
