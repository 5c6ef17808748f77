"""``vllm-0.2``: vLLM of late 2023 (eager PyTorch, Ray tensor-parallel workers, NCCL all-reduce)."""

import pytest

import perfsim

# microsoft/vidur 0633efa, data/profiling/a100/cpu_overheads.csv, Llama-2-70b-hf at TP4 on A100:
# per decode batch size, the medians of SCHEDULE + SAMPLER_E2E + PREPARE_INPUTS_E2E +
# PROCESS_MODEL_OUTPUTS + RAY_COMM_TIME (ms)
VIDUR_HOST_MS = {8: 5.58, 16: 7.18, 24: 8.69, 32: 10.36, 40: 12.74, 48: 15.48, 56: 17.08, 64: 17.70}

KWARGS = dict(model="llama2-70b", hardware="a100-80gb", num_devices=4, tp=4, prompt_len=1024, gen_len=50)


def _decode(runtime, batch):
    return perfsim.estimate(runtime=runtime, batch=batch, **KWARGS)["breakdown"]["decode"]


@pytest.mark.parametrize("batch", sorted(VIDUR_HOST_MS))
def test_host_time_per_step_reproduces_the_profiled_engine(batch):
    """The profile's exposed host time per decode step is the engine's profiled host work at every
    batch of the profile (8-64 sequences), each row within 6 %."""
    assert _decode("vllm-0.2", batch)["overhead_s"] * 1e3 == pytest.approx(VIDUR_HOST_MS[batch], rel=0.06)


def test_eager_kernels_and_nccl_all_reduce():
    """No CUDA graphs: every kernel pays the device's own launch cost (a100-80gb: 4 us) instead of
    the graph replay's 1.5 us; no custom all-reduce: the TP all-reduces run NCCL, slower at decode
    sizes than vLLM 0.4+'s one-shot kernel."""
    old, new = _decode("vllm-0.2", 1), _decode("vllm-0.5", 1)
    assert old["launch_s"] == pytest.approx(new["launch_s"] * 4.0 / 1.5, rel=1e-9)
    assert old["communication_s"] > 1.5 * new["communication_s"]
