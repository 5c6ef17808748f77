"""Benchmark: configurations per second of perfsim.sweep, and wall time of the CLI.

Run: ``python benchmarks/bench_sweep.py`` (default 1,000,000-row grids). Prints a Markdown table
for the README. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

import perfsim


def _grid(rows: int, base: dict, axes: dict) -> dict:
    """Trim the axes so their product is close to ``rows`` (the last axis takes the remainder)."""
    out = dict(base)
    names = list(axes)
    budget = rows
    for i, name in enumerate(names):
        values = axes[name]
        left = math.prod(len(axes[n]) for n in names[i + 1:])
        take = max(1, min(len(values), budget // max(left, 1)))
        out[name] = values[:take]
        budget //= take
    return out


def inference_grid(rows):
    return _grid(rows, {"model": "llama2-70b", "hardware": "h100-sxm"}, {
        "tp": [1, 2, 4, 8], "batch": list(range(1, 251)), "prompt_len": list(range(128, 128 + 32 * 100, 32)),
        "gen_len": list(range(16, 16 + 8 * 10, 8)),
    })


def training_grid(rows):
    return _grid(rows, {"model": "llama2-7b", "hardware": "a100-80gb", "mode": "train", "num_devices": 8}, {
        "tp": [1, 2, 4, 8], "recompute": ["none", "selective", "full"], "zero": [0, 1, 2, 3],
        "schedule": ["1f1b", "gpipe", "zero-bubble"], "sp": [False, True],
        "micro_batch": [1, 2, 4, 8], "seq_len": list(range(512, 512 + 64 * 120, 64)),
        "global_batch": list(range(64, 64 + 64 * 100, 64)),
    })


def cluster_training_grid(rows):
    """GPT-3 175B on clusters of up to 4,096 A100s: every parallelism axis of a training plan. The
    largest model-parallel sizes come first, so a grid trimmed to fewer rows keeps plans that fit
    (tp 8 x pp 16, as Megatron trains it) rather than ones every row of which is refused."""
    return _grid(rows, {"model": "gpt3-175b", "hardware": "a100-80gb", "mode": "train", "seq_len": 2048}, {
        "tp": [8, 4, 2, 1], "pp": [16, 8, 32, 4, 2, 1], "dp": [1, 2, 4, 8, 16, 32, 64, 128],
        "micro_batch": [1, 2, 4, 8], "zero": [0, 1, 2, 3], "recompute": ["none", "selective", "full"],
        "schedule": ["gpipe", "1f1b", "interleaved", "zero-bubble"], "virtual_stages": [1, 2],
        "global_batch": list(range(512, 512 + 128 * 100, 128)),
    })


def bench(name, grid, repeat):
    rows = math.prod(len(v) for v in grid.values() if isinstance(v, list))
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        df = perfsim.sweep(**grid)
        best = min(best, time.perf_counter() - t0)
    assert len(df) == rows
    return name, rows, best, rows / best


#: the 1,000 inference configurations of benchmarks/bench_peers.py
INFERENCE_1000 = dict(model="llama2-70b", hardware="h100-sxm", tp=[1, 2, 4, 8],
                      batch=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
                      prompt_len=[128, 256, 512, 1024, 2048], gen_len=[64, 128, 256, 512, 1024])
ESTIMATE = dict(model="llama2-70b", hardware="h100-sxm", tp=8, batch=8, prompt_len=2048, gen_len=256)


def warm_estimate(calls: int) -> tuple[float, float]:
    """Median time of one warm ``perfsim.estimate`` of :data:`ESTIMATE`, and of its fixed cost: the same
    call with the cost models (the closed forms and the power model) replaced by their precomputed
    results, so what is timed is everything around them (checks, columns, feasibility, the result dict).
    Each call is made (none recalled: :mod:`perfsim.plan.recall`)."""
    from bench_peers import median_call

    from perfsim.analytical import evaluate as ev
    from perfsim.plan import recall
    from perfsim.plan.columns import build
    from perfsim.plan.grid import expand

    def median(fn):
        on, recall.ON = recall.ON, False
        try:
            return median_call(fn, calls)
        finally:
            recall.ON = on

    whole = median(lambda: perfsim.estimate(**ESTIMATE))
    c = build(expand(ESTIMATE))
    out, checks = ev.estimate_inference(c)
    power = ev.inference_power(c, out)
    saved = ev.estimate_inference, ev.inference_power
    ev.estimate_inference = lambda c, single=None: (dict(out), checks)
    ev.inference_power = lambda c, o, one=None: power
    try:
        fixed = median(lambda: perfsim.estimate(**ESTIMATE))
    finally:
        ev.estimate_inference, ev.inference_power = saved
    return whole, fixed


def cli_time(repeat):
    best = math.inf
    cmd = [sys.executable, "-m", "perfsim.cli", "estimate", "--model", "llama2-70b", "--hardware", "a100-80gb",
           "--tp", "8", "--format", "json"]
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=dict(os.environ))
        best = min(best, time.perf_counter() - t0)
    return best


def file_sweep(rows):
    """``perfsim sweep`` of the inference grid to parquet in a child process: wall time and peak memory."""
    grid = inference_grid(rows)
    n = math.prod(len(v) for v in grid.values() if isinstance(v, list))
    with tempfile.TemporaryDirectory() as tmp:
        spec = os.path.join(tmp, "spec.yaml")
        with open(spec, "w") as f:
            json.dump(grid, f)  # JSON is YAML
        cmd = [sys.executable, "-m", "perfsim.cli", "sweep", spec, "--out", os.path.join(tmp, "r.parquet"),
               "--no-progress"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=dict(os.environ))
        wall = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB on Linux
    return n, wall, peak_mib


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--file-rows", type=int, default=None, help="rows of the sweep written to parquet (--rows)")
    parser.add_argument("--calls", type=int, default=1000, help="calls of one warm estimate (the median is reported)")
    args = parser.parse_args()
    # first, while this process is small: a forked child's peak memory counts its parent's pages until exec
    file_row = file_sweep(args.file_rows or args.rows)
    results = [bench("inference sweep", inference_grid(args.rows), args.repeat),
               bench("training sweep (single node)", training_grid(args.rows), args.repeat),
               bench("training sweep (cluster: tp, pp, dp, micro-batch, zero, recompute, schedule)",
                     cluster_training_grid(args.rows), args.repeat)]
    print("| benchmark | rows | best wall time | configs/s |")
    print("| --- | ---: | ---: | ---: |")
    for name, rows, t, rate in results:
        print(f"| {name} | {rows:,} | {t:.2f} s | {rate:,.0f} |")
    one = bench("single estimate as a one-row sweep", inference_grid(1), args.repeat)
    print(f"| {one[0]} | 1 | {one[2] * 1e3:.1f} ms | {one[3]:,.0f} |")
    small = bench("inference sweep of 1,000 rows (tp, batch, prompt, generated tokens)", INFERENCE_1000,
                  max(args.repeat, 20))
    print(f"| {small[0]} | {small[1]:,} | {small[2] * 1e3:.1f} ms | {small[3]:,.0f} |")
    whole, fixed = warm_estimate(args.calls)
    print(f"| one `perfsim.estimate`, warm (median of {args.calls:,} calls) | 1 | {whole * 1e3:.2f} ms "
          f"| {1 / whole:,.0f} |")
    print(f"| its fixed cost: the same call with the cost models' results precomputed | 1 | {fixed * 1e3:.2f} ms | |")
    print(f"| `perfsim estimate` as a process | 1 | {cli_time(args.repeat):.2f} s | |")
    print(f"\nload average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs")
    n, wall, peak = file_row
    print(f"| `perfsim sweep` of the inference grid to parquet (peak memory {peak:,.0f} MiB) | {n:,} | {wall:.2f} s "
          f"| {n / wall:,.0f} |")


if __name__ == "__main__":
    main()
