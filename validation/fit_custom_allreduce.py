"""Fit an inference engine's own all-reduce kernel on published measurements, and report the error.

NVIDIA's aiconfigurator (ai-dynamo/aiconfigurator) publishes, per system and engine, the engine's
tensor-parallel all-reduce timed on 2, 4 and 8 GPUs of one node under
``aic-core/src/aiconfigurator_core/systems/data/<system>/comm/<trtllm|vllm|sglang>/<version>/custom_allreduce_perf.parquet``
(collected by ``collector/network/collect_all_reduce.py``: bf16 buffers of ``[size / 4096, 4096]``
elements, ``message_size`` counting elements; 5 all-reduces captured in one CUDA graph, 3 warm-up
replays, the mean over the timed replays; TensorRT-LLM's ``AllReduce`` with strategy AUTO and its
autotuner off (the strategy table), vLLM's and SGLang's ``tensor_model_parallel_all_reduce`` with the
custom all-reduce on, rows ``*_graph`` for the CUDA-graph mode the engines serve with). Above the
engine's limit the engine runs NCCL, so only rows below the runtime's ``custom_allreduce_max_bytes``
(``custom_allreduce_tp2_max_bytes`` on 2 ranks) are fitted. The data files are not part of this
repository: pass the paths of the tables with the hardware spec each was measured on.

    python validation/fit_custom_allreduce.py RUNTIME TABLE=SPEC [TABLE=SPEC ...] [--report]

fits, by least squares on log error over every row of the tables together, the kernel's fixed time
and link-bandwidth share of :func:`perfsim.cost.collectives.custom_all_reduce_time` (the values of
the runtime's ``custom_allreduce_latency_us_on`` and ``custom_allreduce_efficiency_on`` for the
specs' family) and prints them with the error per table and group size; ``--report`` prints the
error of the runtime as it stands, and of the NCCL price it replaces, instead.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from perfsim.cost.collectives import custom_all_reduce_time
from perfsim.cost.topology import _library_collective, group_collective
from perfsim.plan.columns import build
from perfsim.plan.grid import expand


def _columns(runtime, spec, tp):
    return build(expand({"model": "llama2-7b", "hardware": spec, "num_devices": tp, "tp": tp, "dtype": "fp16",
                         "runtime": runtime, "mode": "inference", "batch": 1, "prompt_len": 1, "gen_len": 1}))


def load_rows(runtime, path, spec):
    """``(ranks, bytes, measured s, link bandwidth B/s, columns per group size)`` of the rows below the limit."""
    d = pd.read_parquet(path)
    if "backend" in d:
        d = d[d["backend"].str.endswith("graph")]
    d = d.assign(bytes=d["message_size"] * 2.0, t=d["latency"] * 1e-3)
    d = d.groupby(["num_gpus", "bytes"], as_index=False)["t"].median()
    cols = {int(n): _columns(runtime, spec, int(n)) for n in d["num_gpus"].unique()}
    limit = np.array([float(np.ravel(cols[int(n)]["custom_ar_max_tp2" if n == 2 else "custom_ar_max"])[0])
                      for n in d["num_gpus"]])
    d = d[d["bytes"] < limit]
    bw = np.array([float(np.ravel(cols[int(n)]["scaleup_bw"])[0]) for n in d["num_gpus"]])
    return d["num_gpus"].to_numpy(float), d["bytes"].to_numpy(), d["t"].to_numpy(), bw, cols


def _errors(label, n, ratio):
    per = "  ".join(f"TP{int(g)} {np.mean(np.abs(ratio[n == g] - 1)) * 100:.1f}%" for g in np.unique(n))
    print(f"  {label}: mean |error| {np.mean(np.abs(ratio - 1)) * 100:.1f}%, model/measured "
          f"{ratio.min():.2f}-{ratio.max():.2f} (median {np.median(ratio):.2f})  [{per}]")


def main(argv):
    report = "--report" in argv
    runtime, *pairs = [a for a in argv if a != "--report"]
    tables = [load_rows(runtime, *pair.split("=")) + (pair,) for pair in pairs]
    if report:
        for n, size, t, _, cols, pair in tables:
            print(pair)
            model = np.array([float(np.ravel(group_collective(cols[int(g)], "all_reduce", s, g))[0])
                              for g, s in zip(n, size)])
            nccl = np.array([float(np.ravel(_library_collective(cols[int(g)], "all_reduce", s, g, "auto", 1.0))[0])
                             for g, s in zip(n, size)])
            _errors("runtime", n, model / t)
            _errors("NCCL price", n, nccl / t)
        return
    n, size, t, bw = (np.concatenate([tab[i] for tab in tables]) for i in range(4))

    def model(p):
        return custom_all_reduce_time(size, n, bandwidth=bw, efficiency=p[1], latency_s=p[0] * 1e-6)

    fit = least_squares(lambda p: np.log(model(p) / t), [3.0, 0.5], bounds=([0.0, 0.01], [100.0, 1.0]))
    print(f"custom_allreduce_latency_us {fit.x[0]:.3g}, custom_allreduce_efficiency {fit.x[1]:.3g} "
          f"({len(t)} rows)")
    ratio = model(fit.x) / t
    start = 0
    for tab in tables:
        rows = slice(start, start + len(tab[2]))
        start += len(tab[2])
        _errors(tab[5], n[rows], ratio[rows])


if __name__ == "__main__":
    main(sys.argv[1:])
