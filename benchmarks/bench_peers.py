"""Benchmark: perfsim beside llm-analysis on the same configurations.

The same 1,000 inference configurations (Llama-2-70B on H100 SXM: tp, batch, prompt and generated
tokens) and the same training configurations (Llama-2-7B on 8 A100-80GB: tp, ZeRO stage,
recomputation, micro-batch, sequence length) go through both tools; the script prints the
configurations per second of each and their ratio, one warm estimate (median), and the wall time of
each command line (median of several runs).

Run: ``pip install 'perfsim[bench]'`` (llm-analysis 0.2.2), then ``python benchmarks/bench_peers.py``.
Without llm-analysis only perfsim's numbers are printed. Not part of the test suite.

How the configurations are made the same: llm-analysis reads the model's shapes from a
``ModelConfig`` built here from perfsim's own zoo entry (layers, hidden size, heads, KV heads,
vocabulary). llm-analysis prices an MLP as two ``hidden x ffn`` matrices; Llama's gated MLP has three
``hidden x intermediate`` ones, so it gets ``ffn = 1.5 x intermediate`` (the same parameters and
FLOPs) and, in training, ``mlp_gated_linear_units``. The GPU is llm-analysis's own entry for the same
part (``h100-sxm-80gb``, ``a100-sxm-80gb``), 16-bit weights and activations (``w16a16e16``; perfsim
``bf16``). Inference: one data-parallel replica, so llm-analysis's batch per GPU is the batch;
prompt tokens are its ``seq_len``, generated tokens its ``num_tokens_to_generate``. Training: dp =
8 / tp, sequence parallelism with tp (llm-analysis's default; perfsim ``sp``), selective
recomputation = llm-analysis's ``SELECTIVE``. llm-analysis refuses a plan that does not fit with an
``AssertionError``; such a configuration counts as evaluated, as perfsim's ``feasible = False`` row does.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time

import perfsim
from perfsim.plan import recall
from perfsim.specs.model import load_model

INFERENCE = dict(model="llama2-70b", hardware="h100-sxm", tp=[1, 2, 4, 8],
                 batch=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
                 prompt_len=[128, 256, 512, 1024, 2048], gen_len=[64, 128, 256, 512, 1024])
TRAINING = dict(model="llama2-7b", hardware="a100-80gb", mode="train", num_devices=8, sp=True, global_batch=512,
                tp=[1, 2, 4, 8], zero=[0, 1, 2, 3], recompute=["none", "selective", "full"],
                micro_batch=[1, 2, 4, 8], seq_len=[1024, 2048, 4096])
PEER_GPU = {"h100-sxm": "h100-sxm-80gb", "a100-80gb": "a100-sxm-80gb"}
CLI_ARGS = dict(model="llama2-70b", hardware="h100-sxm", tp=8, batch=8, prompt_len=2048, gen_len=256)


def rows(axes: dict) -> list[dict]:
    """Every configuration of ``axes`` (lists are axes), in the order perfsim.sweep lays them out."""
    names = [k for k, v in axes.items() if isinstance(v, list)]
    fixed = {k: v for k, v in axes.items() if not isinstance(v, list)}
    product = itertools.product(*(axes[k] for k in names))
    return [{**fixed, **dict(zip(names, values, strict=True))} for values in product]


def timings(fn, runs: int) -> list[float]:
    """Wall times of ``runs`` calls of ``fn`` after one warm-up call, s."""
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def best(fn, repeat: int) -> float:
    """Best wall time of ``repeat`` runs of ``fn`` (after one warm-up run)."""
    return min(timings(fn, repeat))


def median_call(fn, calls: int) -> float:
    """Median wall time of ``calls`` calls of ``fn`` (after one warm-up call)."""
    return statistics.median(timings(fn, calls))


def cli_wall(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=dict(os.environ))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# -- llm-analysis -------------------------------------------------------------------------------

def peer():
    """The llm-analysis package, or None (with the reason printed) when it is not installed."""
    try:
        import llm_analysis.analysis as la
    except ImportError as exc:
        print(f"llm-analysis is not installed ({exc}); pip install 'perfsim[bench]' to compare with it. "
              "Only perfsim's numbers follow.\n")
        return None
    logging.getLogger("llm_analysis").setLevel(logging.ERROR)
    la.logger.setLevel(logging.ERROR)
    return la


def peer_model(la, name: str):
    """llm-analysis's ModelConfig with the shapes of perfsim's zoo model ``name``."""
    from llm_analysis.config import ModelConfig

    f = load_model(name).fields
    gated = bool(f["gated_mlp"])
    ffn = f["intermediate_size"] * (1.5 if gated else 1.0)
    return ModelConfig(name=name, num_layers=f["num_hidden_layers"], n_head=f["num_attention_heads"],
                       hidden_dim=f["hidden_size"], vocab_size=f["vocab_size"],
                       max_seq_len=f.get("max_position_embeddings"), num_key_value_heads=f["num_key_value_heads"],
                       ffn_embed_dim=int(ffn), expansion_ratio=ffn / f["hidden_size"], model_type="llama"), gated


def peer_runner(la, axes: dict):
    """A function that evaluates one configuration of ``axes`` with llm-analysis."""
    from llm_analysis.config import DtypeConfig, ParallelismConfig, get_gpu_config_by_name

    model, gated = peer_model(la, axes["model"])
    gpu = get_gpu_config_by_name(PEER_GPU[axes["hardware"]])
    dtype = DtypeConfig()  # w16a16e16
    recompute = {"none": la.ActivationRecomputation.NONE, "selective": la.ActivationRecomputation.SELECTIVE,
                 "full": la.ActivationRecomputation.FULL}

    def infer(row):
        analysis = la.LLMAnalysis(model, gpu, dtype, ParallelismConfig(tp_size=row["tp"]))
        return analysis.inference(batch_size_per_gpu=row["batch"], seq_len=row["prompt_len"],
                                  num_tokens_to_generate=row["gen_len"])

    def train(row):
        dp = row["num_devices"] // row["tp"]
        analysis = la.LLMAnalysis(model, gpu, dtype, ParallelismConfig(tp_size=row["tp"], dp_size=dp))
        return analysis.training(batch_size_per_gpu=row["micro_batch"], global_batch_size=row["global_batch"],
                                 seq_len=row["seq_len"], activation_recomputation=recompute[row["recompute"]],
                                 ds_zero=la.DSZeRO(row["zero"]), flash_attn=True, mlp_gated_linear_units=gated)

    run = train if axes.get("mode") == "train" else infer

    def one(row):
        try:
            run(row)
            return True
        except AssertionError:  # llm-analysis's answer for a plan that does not fit
            return False

    return one


def peer_all(one, configs: list[dict]) -> int:
    return sum(one(row) for row in configs)


def peer_cli(la, folder: str) -> list[str]:
    """llm-analysis's command line for the estimate of :data:`CLI_ARGS`, its model a JSON file in ``folder``."""
    import dataclasses
    import json

    path = os.path.join(folder, "llama2-70b.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(dataclasses.asdict(peer_model(la, CLI_ARGS["model"])[0]), f)
    return [sys.executable, "-m", "llm_analysis.analysis", "infer", "--model_name", path,
            "--gpu_name", "h100-sxm-80gb", "--tp_size", str(CLI_ARGS["tp"]), "--batch_size_per_gpu",
            str(CLI_ARGS["batch"]), "--seq_len", str(CLI_ARGS["prompt_len"]), "--num_tokens_to_generate",
            str(CLI_ARGS["gen_len"]), "--log_level", "ERROR"]


# -- the comparison -----------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each sweep (the best is reported)")
    parser.add_argument("--calls", type=int, default=1000, help="calls of one warm estimate (the median is reported)")
    parser.add_argument("--cli-runs", type=int, default=7, help="runs of each command line (the median is reported)")
    args = parser.parse_args()
    recall.ON = False  # every estimate made, as the peer makes each (none recalled: perfsim.plan.recall)
    la = peer()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs\n")
    print("| benchmark | configs | perfsim | llm-analysis | perfsim's speed / llm-analysis's |")
    print("| --- | ---: | ---: | ---: | ---: |")

    def line(name, n, ours, theirs, unit="configs/s", higher=True):
        fmt = "{:,.0f}" if unit == "configs/s" else "{:.3g}"
        if theirs is None:
            print(f"| {name} | {n:,} | {fmt.format(ours)} {unit} | | |")
            return
        ratio = ours / theirs if higher else theirs / ours  # above 1: perfsim is faster
        print(f"| {name} | {n:,} | {fmt.format(ours)} {unit} | {fmt.format(theirs)} {unit} | {ratio:,.3g}x |")

    for name, axes in (("inference (Llama-2-70B, H100)", INFERENCE), ("training (Llama-2-7B, 8 x A100)", TRAINING)):
        configs = rows(axes)
        t_sweep = best(lambda axes=axes: perfsim.sweep(**axes), args.repeat)
        theirs = None
        if la is not None:
            one = peer_runner(la, axes)
            t_peer = best(lambda one=one, configs=configs: peer_all(one, configs), max(1, args.repeat // 2))
            theirs = len(configs) / t_peer
        line(f"{name}: perfsim.sweep (one call)", len(configs), len(configs) / t_sweep, theirs)
        t_loop = best(lambda configs=configs: [perfsim.estimate(**row) for row in configs], 1)
        line(f"{name}: perfsim.estimate per configuration", len(configs), len(configs) / t_loop, theirs)

    ours = median_call(lambda: perfsim.estimate(**CLI_ARGS), args.calls)
    theirs = None
    if la is not None:
        one = peer_runner(la, INFERENCE)
        theirs = median_call(lambda: one(CLI_ARGS), args.calls)
    line("one warm estimate, median (Llama-2-70B, H100 x 8, batch 8)", 1, ours * 1e3, theirs and theirs * 1e3,
         unit="ms", higher=False)

    ours_cli = [sys.executable, "-m", "perfsim", "estimate", "--format", "json"] + [
        a for k, v in CLI_ARGS.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    t_ours = cli_wall(ours_cli, args.cli_runs)
    t_theirs = None
    if la is not None:
        with tempfile.TemporaryDirectory() as folder:
            t_theirs = cli_wall(peer_cli(la, folder), args.cli_runs)
    line("command line, one estimate, median wall time", 1, t_ours, t_theirs, unit="s", higher=False)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
