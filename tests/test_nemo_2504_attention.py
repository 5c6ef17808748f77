"""NeMo 25.04 on Blackwell: cuDNN fused attention at the rate of the cuDNN of spring 2025 (cuDNN 9.10.2 on
B200, the earliest published kernel measurement), not today's; every other key is nemo's. The profile's
figures are re-derived here from the published rows, and the priced calls are checked against them."""

import numpy as np
import pytest

from perfsim.cost.price import attention_length_eff, price
from perfsim.graph.transformer import Attention
from perfsim.plan.columns import build
from perfsim.plan.grid import expand
from perfsim.specs import runtime as R

# cuDNN 9.10.2 on B200, bf16, causal, 128 query / 8 KV heads of 128, batch 1 (NVIDIA/cudnn-frontend f937055,
# benchmark/sdpa_benchmark_bf16_training/artifacts/sdpa_benchmark_results_NVIDIA_B200.csv, pyt_cudnn):
# sequence -> (forward, backward) TFLOP/s
CUDNN_9_10_B200 = {4096: (897.309, 709.138), 8192: (1211.140, 945.440), 16384: (1358.566, 1074.499),
                   32768: (1435.072, 1132.387)}
B200_CEILING = 2250.0 * 0.776  # TFLOP/s: bf16 peak x attention_max (hardware_specs/b200.yaml)
SMS, HEADS = 148, 128


def _asymptotes():
    """Each figure over the wave efficiency and length factor of its call (as runtimes/megatron.yaml)."""
    fwd, bwd = [], []
    for seq, (f, b) in CUDNN_9_10_B200.items():
        blocks = HEADS * np.ceil(seq / 128)
        wave = blocks / (np.ceil(blocks / SMS) * SMS)
        span = (seq + 1.0) / 2.0
        fwd.append(f / (B200_CEILING * wave * attention_length_eff(span, 1, 1)))
        bwd.append(b / (B200_CEILING * wave * attention_length_eff(span, 1, 1, backward=True)))
    return float(np.mean(fwd)), float(np.mean(bwd))


def test_blackwell_figures_follow_from_the_published_rows():
    fwd, bwd = _asymptotes()
    r = R.load_runtime("nemo-25.04").values
    assert r["attention_efficiency_on.blackwell"] == pytest.approx(fwd, abs=6e-4)
    assert r["attention_backward_ratio_on.blackwell"] == pytest.approx(bwd / fwd, abs=6e-4)


def test_only_the_blackwell_attention_differs_from_nemo():
    new, nemo = R.load_runtime("nemo-25.04").values, R.load_runtime("nemo").values
    differ = {k for k in set(new) | set(nemo) if new.get(k) != nemo.get(k)}
    assert differ == {"name", "description", "attention_efficiency_on.blackwell",
                      "attention_backward_ratio_on.blackwell"}


def _rates(runtime, seq):
    """Priced forward and backward TFLOP/s of the benchmark's causal call on B200."""
    c = build(expand({"model": "llama3-8b", "hardware": "b200", "mode": "train", "seq_len": 8192,
                      "global_batch": 8, "runtime": runtime}))
    span = (seq + 1.0) / 2.0
    flops = 4.0 * HEADS * 128 * seq * span
    op = Attention("attention", flops, 0.0, HEADS * np.ceil(seq / 128), span=span, visits=1.0, diagonal=1.0)
    t_f, t_b = (float(np.asarray(price(c, [op], backward=b)["attention_s"] - c["launch_s"])) for b in (False, True))
    return flops / t_f / 1e12, 2.5 * flops / t_b / 1e12


def test_priced_calls_meet_the_measured_rates_on_average_and_stay_below_todays():
    """Over the four calls the priced rate over the measured one averages 1 (the asymptote is their
    mean), forward and backward; today's cuDNN (nemo) prices every call faster."""
    ratios = {True: [], False: []}
    for seq, (f, b) in CUDNN_9_10_B200.items():
        fwd, bwd = _rates("nemo-25.04", seq)
        ratios[True].append(f / fwd)
        ratios[False].append(b / bwd)
        today = _rates("nemo", seq)
        assert today[0] > fwd and today[1] > bwd
    # each figure over its priced rate, as an asymptote over the profile's: the mean is 1
    assert np.mean(ratios[True]) == pytest.approx(1.0, abs=2e-3)
    assert np.mean(ratios[False]) == pytest.approx(1.0, abs=2e-3)
