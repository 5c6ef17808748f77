"""8-bit training quantises the GEMM operands (perfsim.graph.transformer.fp8_cast_ops): the
Transformer Engine engines (nemo, megatron) fuse the cast of the QKV and MLP-up inputs into the
norm, keep the quantised weights for the step, write transposed copies only where the fp8 GEMMs
need the TN layout (Hopper, not Blackwell) and run the LM head in 16 bits; a 16-bit plan does none
of it."""

import numpy as np
import pytest

from perfsim.cost.price import price
from perfsim.errors import InputError
from perfsim.graph.transformer import Pass, dense_mlp_ops, fp8_cast_ops, layer_ops, lm_head_ops
from perfsim.plan.columns import build
from perfsim.plan.grid import expand
from perfsim.specs.runtime import _build

T = 4096.0  # tokens of one micro-batch (one sequence of 4K)
H, FFN, QKV = 4096.0, 11008.0, 3.0 * 4096.0  # llama2-7b: hidden, MLP width, fused QKV width (32 heads of 128, MHA)


def _config(**kw):
    args = {"model": "llama2-7b", "hardware": "h100-sxm", "mode": "train", "num_devices": 8, "tp": 1, "pp": 1,
            "dp": 8, "seq_len": 4096, "global_batch": 128, "micro_batch": 1, "dtype": "fp8", "runtime": "nemo", **kw}
    return build(expand(args))


def _pass():
    return Pass(tokens=T, seqs=1.0, q_len=T, kv_len=T, causal=1.0, logits_tokens=T)


def _cast(c):
    op = next(o for o in layer_ops(c, _pass(), moe=False) if o.name == "fp8_cast")
    return float(np.asarray(op.moved_bytes)), float(np.asarray(op.backward_bytes)), \
        float(np.asarray(op.kernels)), float(np.asarray(op.backward_kernels))


def test_transformer_engine_layer_on_hopper_by_hand():
    """llama2-7b on H100 under nemo, one 4K micro-batch of 16 (128 sequences over 8 ranks). Forward:
    the two norm-fed inputs (QKV, MLP up; 4096 wide) are written in fp8 by the norm (-1 byte) and
    transposed (+2); the output projection's (4096) and MLP-down's (11008) inputs are cast and
    transposed (2 read + 1 + 1 written); the four weights (4096 x 12288, 4096 x 4096, 4096 x 22016,
    11008 x 4096) the same, once per step (1/16 per micro-batch). Backward: the four output gradients
    (12288, 4096, 22016, 4096 wide) cast and transposed, 4 bytes each."""
    forward, backward, kernels, backward_kernels = _cast(_config())
    weights = H * QKV + H * H + H * 2.0 * FFN + FFN * H
    assert forward == pytest.approx(T * (2.0 * H * (1.0 - 2.0 + 2.0) + 4.0 * (H + FFN)) + 4.0 * weights / 16.0)
    assert backward == pytest.approx(T * 4.0 * (QKV + H + 2.0 * FFN + H))
    assert (kernels, backward_kernels) == pytest.approx((4.0 + 4.0 / 16.0, 4.0))


def test_blackwell_writes_no_transposes():
    """B200 (non-TN fp8 GEMMs): the norms write fp8 (-1 byte each), the other inputs, the weights and
    the output gradients are cast once (2 read + 1 written); no transpose kernels."""
    forward, backward, kernels, backward_kernels = _cast(_config(hardware="b200"))
    weights = H * QKV + H * H + H * 2.0 * FFN + FFN * H
    assert forward == pytest.approx(T * (2.0 * H * -1.0 + 3.0 * (H + FFN)) + 3.0 * weights / 16.0)
    assert backward == pytest.approx(T * 3.0 * (QKV + H + 2.0 * FFN + H))
    assert (kernels, backward_kernels) == pytest.approx((2.0 + 4.0 / 16.0, 4.0))


def test_engine_without_the_keys_casts_every_operand_every_micro_batch():
    """torchtitan gives none of the keys: every input and weight cast and transposed each micro-batch."""
    forward, backward, _, _ = _cast(_config(runtime="torchtitan"))
    weights = H * QKV + H * H + H * 2.0 * FFN + FFN * H
    assert forward == pytest.approx(T * 4.0 * (3.0 * H + FFN) + 4.0 * weights)
    assert backward == pytest.approx(T * 4.0 * (QKV + H + 2.0 * FFN + H))


@pytest.mark.parametrize("kw", [{"dtype": "bf16"}, {"mode": "inference", "batch": 8, "prompt_len": 512,
                                                    "runtime": "trt-llm"}])
def test_no_cast_outside_8bit_training(kw):
    """A bf16 plan and an fp8 inference pass add no cast traffic or kernels, forward or backward."""
    if kw.get("mode") == "inference":
        c = build(expand({"model": "llama2-7b", "hardware": "h100-sxm", "dtype": "fp8", **kw}))
    else:
        c = _config(**kw)
    assert _cast(c) == (0.0, 0.0, 0.0, 0.0)
    t = price(c, [fp8_cast_ops(c, dense_mlp_ops(c, _pass()))], backward=True)
    assert float(np.asarray(t["elementwise_s"])) == 0.0


def test_lm_head_runs_in_16_bits_under_transformer_engine():
    """nemo's LM head (Megatron-core's own linear) runs at the bf16 rate and ceiling, with no cast;
    torchtitan's (Float8Linear everywhere) at the fp8 ones."""
    c = _config()
    head = next(op for op in lm_head_ops(c, _pass()) if op.name == "lm_head")
    assert float(np.asarray(head.wide)) == 1.0
    casts = next(op for op in lm_head_ops(c, _pass()) if op.name == "fp8_cast")
    assert float(np.asarray(casts.moved_bytes)) == 0.0
    def head_time(cc):
        return float(np.asarray(price(cc, [op for op in lm_head_ops(cc, _pass()) if op.name == "lm_head"])["gemm_s"]))

    wide = head_time(c)
    assert wide == pytest.approx(head_time(_config(dtype="bf16")), rel=1e-9)
    assert head_time(_config(runtime="torchtitan")) < 0.7 * wide


def test_transpose_flag_must_be_0_or_1():
    """fp8_transpose_on takes 0 or 1 per family."""
    base = {"name": "x", "description": "x", "mode": "train", "step_overhead_ms": 1.0, "kernels_per_layer": 6,
            "attention": "flash", "attention_efficiency": 0.8, "grad_reduce_bytes": 4, "dp_overlap": 1.0,
            "tp_overlap": 0.5, "dropout": False, "fragmentation": 0.1}
    with pytest.raises(InputError):
        _build({**base, "fp8_transpose_on.hopper": 0.5}, "x.yaml")


def test_outside_8_bit_training_the_cast_op_is_empty_and_prices_to_nothing():
    import numpy as np

    from perfsim.cost.price import price
    from perfsim.graph.transformer import Pass, fp8_cast_ops, layer_ops
    from perfsim.plan.columns import build
    from perfsim.plan.grid import expand

    p = Pass(tokens=4096.0, seqs=2.0, q_len=2048.0, kv_len=2048.0, causal=1.0, logits_tokens=4096.0)
    for plan in (dict(model="llama2-7b", hardware="h100-sxm", mode="train"),
                 dict(model="llama2-7b", hardware="h100-sxm", dtype="fp8")):
        c = build(expand(plan))
        ops = layer_ops(c, p, moe=False)
        cast = fp8_cast_ops(c, ops)
        assert (cast.moved_bytes, cast.kernels, cast.backward_bytes, cast.backward_kernels) == (0.0, 0.0, 0.0, 0.0)
        for backward in (False, True):
            assert np.all(price(c, [cast], backward=backward)["total_s"] == 0.0)
