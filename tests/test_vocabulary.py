"""Interface vocabulary: PIM arguments, runtime what-ifs, collective algorithms, what-if sweeps."""

import pytest

import perfsim


def test_pim_arguments_are_checked():
    r = perfsim.estimate(model="llama3-8b", hardware="h100-sxm", pim_mode="concurrent")
    assert not r["feasible"] and "PIM" in r["reason"]
    r = perfsim.estimate(model="llama3-8b", hardware="h100-sxm", sub_batches=2)
    assert not r["feasible"] and "PIM" in r["reason"]
    with pytest.raises(perfsim.InputError, match="sub_batches"):
        perfsim.estimate(model="llama3-8b", hardware="h100-sxm", sub_batches=3)
    with pytest.raises(perfsim.InputError, match="concurrent"):
        perfsim.estimate(model="llama3-8b", hardware="h100-sxm", pim_mode="dual")


def test_runtime_what_if():
    kw = dict(model="llama3-8b", hardware="h100-sxm", mode="train", global_batch=16, seq_len=4096)
    eager = perfsim.estimate(**kw, runtime={"base": "torchtitan", "compile": False})
    compiled = perfsim.estimate(**kw, runtime={"base": "torchtitan", "compile": True})
    assert compiled["step_time_s"] < eager["step_time_s"]
    with pytest.raises(perfsim.InputError, match="did you mean 'compile'"):
        perfsim.estimate(**kw, runtime={"base": "torchtitan", "compil": True})


def test_collective_algorithm_choice():
    ring = perfsim.collective("h100-sxm", "all_reduce", 2**30, 16, algorithm="ring")
    tree = perfsim.collective("h100-sxm", "all_reduce", 2**30, 16, algorithm="tree")
    auto = perfsim.collective("h100-sxm", "all_reduce", 2**30, 16)
    assert auto["time_s"] <= min(ring["time_s"], tree["time_s"]) + 1e-12
    small_ring = perfsim.collective("h100-sxm", "all_reduce", 4096, 64, algorithm="ring")
    small_tree = perfsim.collective("h100-sxm", "all_reduce", 4096, 64, algorithm="tree")
    assert small_tree["time_s"] < small_ring["time_s"]  # log-depth latency wins for tiny messages
    with pytest.raises(perfsim.InputError, match="algorithm"):
        perfsim.collective("h100-sxm", "all_reduce", 4096, 8, algorithm="butterfly")


def test_hardware_what_if_lists_are_one_vectorised_sweep():
    df = perfsim.sweep(model="llama2-70b", hardware={"base": "h100-sxm", "hbm_bandwidth_gb_s": [1000, 2000, 3350, 4800]},
                       tp=4, batch=8)
    assert list(df["hardware.hbm_bandwidth_gb_s"]) == [1000, 2000, 3350, 4800]
    assert df["tpot_s"].is_monotonic_decreasing
    r = perfsim.estimate(model="llama2-70b", hardware={"base": "h100-sxm", "hbm_capacity_gib": 40}, tp=4, batch=8)
    assert r["memory_per_device_gib"]["capacity"] == 40
