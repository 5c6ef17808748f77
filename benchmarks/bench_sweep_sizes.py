"""Benchmark: sweeps of every size, the rows of the README's sweep before/after table.

Run from a checkout: ``python benchmarks/bench_sweep_sizes.py``. To compare two versions on a shared
machine, run it in each checkout in turn, two or three rounds, and take each row's best: other work
on the cores only ever adds time. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import math
import os

from bench_sweep import INFERENCE_1000, cluster_training_grid, inference_grid, training_grid

import perfsim


def best_of(fn, repeat: int) -> float:
    """Best wall time of ``repeat`` calls of ``fn`` (after one warm-up call), s."""
    import time

    fn()
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def rows_of(axes: dict) -> int:
    return math.prod(len(v) for v in axes.values() if isinstance(v, list))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3, help="runs of the large sweeps (the best is reported)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the large inference sweep")
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    quarters = [dict(INFERENCE_1000, tp=[tp]) for tp in INFERENCE_1000["tp"]]
    cases = [("one-row sweep", inference_grid(1), 100, None),
             ("inference sweep of 1,000 rows, one call", INFERENCE_1000, 40, None),
             ("the same 1,000 rows as four calls of 250", None, 20, lambda: [perfsim.sweep(**q) for q in quarters]),
             ("cluster training grid, each row's reason with its numbers (`cluster_training_grid(9_600)`)",
              cluster_training_grid(9_600), 20, None),
             ("cluster training grid (`cluster_training_grid(86_400)`)", cluster_training_grid(86_400), 10, None),
             ("training sweep (single node)", training_grid(100_000), args.repeat, None),
             ("inference sweep", inference_grid(args.rows), args.repeat, None)]
    print("| benchmark | rows | best wall time | configs/s |")
    print("| --- | ---: | ---: | ---: |")
    for name, axes, repeat, fn in cases:
        rows = rows_of(axes) if axes is not None else rows_of(INFERENCE_1000)
        t = best_of(fn or (lambda axes=axes: perfsim.sweep(**axes)), repeat)
        shown = f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"
        print(f"| {name} | {rows:,} | {shown} | {rows / t:,.0f} |", flush=True)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
