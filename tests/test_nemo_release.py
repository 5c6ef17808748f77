"""NeMo Framework 24.03.01 as its launcher ran it (runtime ``nemo-24.03``): cuDNN fused attention off, so
Transformer Engine runs FlashAttention-2 on Hopper, and Megatron-core's unfused cross entropy; the rest as ``nemo``."""

import pytest

import perfsim
from perfsim.cost.price import price
from perfsim.graph.transformer import Pass, lm_head_ops
from perfsim.plan.columns import build
from perfsim.plan.grid import expand
from perfsim.specs.runtime import load_runtime


def _train(hardware, runtime):
    r = perfsim.estimate(model="llama2-7b", hardware=hardware, mode="train", dp=8, seq_len=16384,
                         global_batch=8, runtime=runtime, recompute="none")["breakdown"]["train"]
    return r


def test_flash_attention_2_prices_hopper_attention_slower_by_the_two_figures():
    """At 16K tokens (compute-bound) the attention's forward F and backward 2.5 F run at the long-call
    shares: today's nemo's cuDNN 0.878 with backward ratio 0.906 (megatron's), FlashAttention-2's 0.476 with
    0.98 here, so the attention takes (1/0.476 + 2.5/(0.476 x 0.98)) / (1/0.878 + 2.5/(0.878 x 0.906))
    = 7.460 / 4.282 = 1.742 times as long; the GEMMs do not move."""
    old, new = _train("h100-sxm", "nemo"), _train("h100-sxm", "nemo-24.03")
    expected = (1 / 0.476 + 2.5 / (0.476 * 0.98)) / (1 / 0.878 + 2.5 / (0.878 * 0.906))
    assert expected == pytest.approx(1.742, abs=1e-3)
    assert new["attention_s"] / old["attention_s"] == pytest.approx(expected, rel=0.01)
    assert new["gemm_s"] == pytest.approx(old["gemm_s"], rel=1e-12)


def test_before_hopper_both_releases_run_flash_attention_2():
    """On an A100 both profiles price the same FlashAttention-2 kernel."""
    assert _train("a100-80gb", "nemo-24.03")["attention_s"] == \
        pytest.approx(_train("a100-80gb", "nemo")["attention_s"], rel=1e-12)


def test_unfused_loss_moves_megatrons_52_bytes_per_logit():
    """The release has no fused cross entropy: 38 + 14 bytes per logit (as megatron) against nemo's
    22 + 6, over 1024 tokens of Llama 3's 128,256 entries."""
    p = Pass(tokens=1024.0, seqs=1.0, q_len=1024.0, kv_len=1024.0, causal=1.0, logits_tokens=1024.0)
    moved = {}
    for runtime in ("nemo", "nemo-24.03"):
        c = build(expand({"model": "llama3-8b", "hardware": "h100-sxm", "mode": "train", "num_devices": 8,
                          "seq_len": 4096, "global_batch": 8, "runtime": runtime}))
        loss = [op for op in lm_head_ops(c, p) if op.name == "loss"]
        moved[runtime] = float(price(c, loss)["hbm_bytes"] + price(c, loss, backward=True)["hbm_bytes"])
    assert moved["nemo-24.03"] == pytest.approx(52.0 * 1024 * 128256)
    assert moved["nemo"] == pytest.approx(28.0 * 1024 * 128256)


def test_every_other_key_is_nemos():
    """Only the attention figures, the loss keys and the texts differ from nemo."""
    old, new = load_runtime("nemo").values, load_runtime("nemo-24.03").values
    differ = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
    assert differ == {"name", "description", "attention_efficiency_on.hopper", "attention_efficiency_on.blackwell",
                      "attention_backward_ratio_on.hopper", "attention_backward_ratio_on.blackwell",
                      "loss_forward_bytes_per_logit", "loss_backward_bytes_per_logit",
                      "loss_forward_kernels", "loss_backward_kernels"}
