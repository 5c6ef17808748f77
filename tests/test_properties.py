"""Invariants (hypothesis): more bandwidth or peak never slower; time >= every roofline bound;
memory per device never grows with more tensor parallelism."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import perfsim
from perfsim.cost.roofline import gemm_efficiency, gemm_time

dims = st.integers(min_value=1, max_value=40000)


@given(m=dims, n=dims, k=dims, peak=st.floats(10, 2000), bw=st.floats(100, 8000), scale=st.floats(1.0, 4.0))
def test_gemm_more_peak_or_bandwidth_never_slower(m, n, k, peak, bw, scale):
    def time(peak_flops, bandwidth):  # the split-K choice sees the device's FLOPs per byte
        eff = gemm_efficiency(m, n, 1.0, 128, 128, 108, 0.85, k=k, balance=peak_flops / (bandwidth * 0.85))
        return gemm_time(m, n, k, peak_flops=peak_flops, bandwidth=bandwidth, eff=eff, memory_eff=0.85,
                         a_bytes=2, w_bytes=2, out_bytes=2, launch_s=4e-6)[0]

    base = time(peak * 1e12, bw * 1e9)
    faster_peak = time(peak * scale * 1e12, bw * 1e9)
    faster_bw = time(peak * 1e12, bw * scale * 1e9)
    assert faster_peak <= base and faster_bw <= base
    # time >= each roofline bound at full peak and full bandwidth
    assert base >= 2.0 * m * n * k / (peak * 1e12)
    assert base >= (m * k + k * n + m * n) * 2 / (bw * 1e9)


models = st.sampled_from(["llama2-7b", "llama2-13b", "mistral-7b", "mixtral-8x7b", "llama3-8b", "opt-6.7b",
                          "gpt-j-6b", "mpt-7b"])


@given(model=models, tp=st.sampled_from([1, 2, 4, 8]), batch=st.integers(1, 256),
       prompt=st.integers(16, 8192), gen=st.integers(2, 1024))
def test_decode_faster_with_more_bandwidth_until_compute_bound(model, tp, batch, prompt, gen):
    df = perfsim.sweep(model=model, hardware={"base": "h100-sxm", "hbm_bandwidth_gb_s": [1000, 2000, 3350, 4800, 9600]},
                       tp=tp, batch=batch, prompt_len=prompt, gen_len=gen)
    tpot = df["tpot_s"].to_numpy()
    assert np.all(np.diff(tpot) <= 1e-15)
    ttft = df["ttft_s"].to_numpy()
    assert np.all(np.diff(ttft) <= 1e-15)


@given(model=models, batch=st.integers(1, 64), prompt=st.integers(16, 4096))
def test_more_peak_never_slower(model, batch, prompt):
    df = perfsim.sweep(model=model, hardware={"base": "a100-80gb", "peak_tflops": [100, 312, 1000]},
                       batch=batch, prompt_len=prompt, gen_len=8)
    assert np.all(np.diff(df["ttft_s"].to_numpy()) <= 1e-15)


@given(model=models, batch=st.integers(1, 64), mode=st.sampled_from(["inference", "train"]),
       recompute=st.sampled_from(["none", "selective", "full"]), sp=st.booleans())
def test_memory_per_device_never_grows_with_tp(model, batch, mode, recompute, sp):
    df = perfsim.sweep(model=model, hardware="h100-sxm", tp=[1, 2, 4, 8], batch=batch, mode=mode,
                       recompute=recompute, sp=sp, seq_len=2048, global_batch=8, prompt_len=1024, gen_len=128)
    for key in ("weights", "kv_cache", "total", "activations", "optimizer"):
        values = df[f"memory_per_device_gib.{key}"].to_numpy()
        assert np.all(np.diff(values) <= 1e-9), key


@given(model=models, tp=st.sampled_from([1, 2, 4, 8]), batch=st.integers(1, 128))
def test_decode_step_above_hbm_bound(model, tp, batch):
    r = perfsim.estimate(model=model, hardware="a100-80gb", tp=tp, batch=batch, prompt_len=512, gen_len=64)
    assert r["tpot_s"] >= r["breakdown"]["decode"]["hbm_bound_s"]
