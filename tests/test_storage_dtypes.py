"""Storage formats apart from the compute format: weight-only quantisation, KV-cache dtype, fp4,
and ``head_dim`` where heads × head_dim differs from the hidden size."""

import perfsim
from perfsim.specs.dtypes import storage_bytes

GB = 1e9
GIB = 2.0**30


def test_llama2_70b_fits_one_gpu_only_with_int4_weights():
    kw = dict(model="llama2-70b", hardware="h100-sxm", batch=1, prompt_len=512, gen_len=128)
    bf16 = perfsim.estimate(**kw)
    assert not bf16["feasible"] and "does not fit" in bf16["reason"]
    int8 = perfsim.estimate(**kw, weight_dtype="int8")
    int4 = perfsim.estimate(**kw, weight_dtype="int4")
    assert int4["feasible"]
    weights_gb = int4["memory_per_device_gib"]["weights"] * GIB / GB
    params = int4["parameters"]
    # parameter count x 0.5 B plus the group scales (fp16 scale + 4-bit zero per 128 weights)
    assert params * 0.5 / GB < weights_gb < params * 0.53 / GB
    assert 34 < weights_gb < 37
    # decode streams the weights: half the bytes, close to half the step (dequantisation hides)
    assert int4["tpot_s"] < 0.65 * int8["tpot_s"]
    assert int8["tpot_s"] < 0.65 * bf16["tpot_s"]


def test_weight_only_quantisation_costs_compute_when_compute_bound():
    kw = dict(model="llama2-13b", hardware="h100-sxm", batch=32, prompt_len=2048, gen_len=16)
    bf16 = perfsim.estimate(**kw)
    int4 = perfsim.estimate(**kw, weight_dtype="int4")
    # prefill is compute-bound: fewer weight bytes do not help, the conversion costs a little
    assert int4["ttft_s"] > bf16["ttft_s"]
    assert int4["ttft_s"] < 1.3 * bf16["ttft_s"]


def test_weight_conversion_needs_a_vector_rate(tmp_path):
    from perfsim.specs.paths import data_dir

    text = (data_dir("hardware_specs") / "tpu-v4.yaml").read_text()
    spec = tmp_path / "tpu-no-vector.yaml"
    spec.write_text("\n".join(line for line in text.splitlines() if "vector_tflops" not in line))
    r = perfsim.estimate(model="llama2-7b", hardware=str(spec), weight_dtype="int8")
    assert not r["feasible"] and "vector rate" in r["reason"]
    assert perfsim.estimate(model="llama2-7b", hardware=str(spec))["feasible"]


def test_fp4_only_where_the_hardware_has_it():
    h100 = perfsim.estimate(model="llama3-8b", hardware="h100-sxm", dtype="fp4")
    assert not h100["feasible"] and "dtype" in h100["reason"]
    b200 = perfsim.estimate(model="llama3-8b", hardware="b200", dtype="fp4")
    assert b200["feasible"]
    # fp4 weights as weight-only storage work anywhere (converted to the compute format)
    assert perfsim.estimate(model="llama3-8b", hardware="h100-sxm", weight_dtype="fp4")["feasible"]
    assert storage_bytes("fp4") == 0.5 + 1 / 32


def test_kv_dtype_sets_cache_size_and_decode_reads():
    kw = dict(model="llama3-8b", hardware="h100-sxm", batch=64, prompt_len=4096, gen_len=256)
    bf16 = perfsim.estimate(**kw)
    fp8 = perfsim.estimate(**kw, kv_dtype="fp8")
    ratio = bf16["memory_per_device_gib"]["kv_cache"] / fp8["memory_per_device_gib"]["kv_cache"]
    assert abs(ratio - 2.0) < 1e-9
    assert fp8["kv_cache_capacity_tokens"] > 1.9 * bf16["kv_cache_capacity_tokens"]
    assert fp8["breakdown"]["decode"]["hbm_bound_s"] < bf16["breakdown"]["decode"]["hbm_bound_s"]
    assert fp8["tpot_s"] < bf16["tpot_s"]


def test_head_dim_is_honoured():
    base = dict(hidden_size=3072, num_hidden_layers=4, num_attention_heads=16, num_key_value_heads=16,
                intermediate_size=8192, vocab_size=32000, hidden_act="silu")
    wide = dict(base, head_dim=256)  # 16 x 256 = 4096 != 3072, as Gemma-7B
    r0 = perfsim.estimate(model=base, hardware="a100-80gb", batch=4, prompt_len=1024, gen_len=64)
    r1 = perfsim.estimate(model=wide, hardware="a100-80gb", batch=4, prompt_len=1024, gen_len=64)
    kv = r1["memory_per_device_gib"]["kv_cache"] / r0["memory_per_device_gib"]["kv_cache"]
    assert abs(kv - 256 / 192) < 1e-9
    # q, k, v and o projections grow by 4096/3072 per layer
    extra = 4 * (4 * 3072 * (4096 - 3072))
    assert abs(r1["parameters"] - r0["parameters"] - extra) < 1
    assert r1["ttft_s"] > r0["ttft_s"]
