"""Every sweep row carries the resolved plan, ``plan.NAME`` for every argument, as the estimate of
that row resolves it (defaults, auto recomputation, the runtime, layers per stage)."""

import ast
import itertools

import numpy as np
import pandas as pd
import pytest

import perfsim
from perfsim.explore.chunks import chunk_bounds, chunk_frame
from perfsim.plan.arguments import ARGUMENTS, MODE_ONLY
from perfsim.plan.grid import space

AXES = {"mode": ["train", "inference"], "pp": [1, 3], "recompute": ["auto", "none"], "runtime": [None, "vllm"],
        "micro_batch": [None, 2]}
FIXED = {"model": "llama2-7b", "hardware": "a100-80gb", "num_devices": 8}
OFFLOADED = {"model": "opt-30b", "hardware": "rtx-a6000", "dtype": "fp16", "prompt_len": 512, "gen_len": 32}


def _row_plan(row) -> dict:
    plan = {}
    for name in ARGUMENTS:
        key = f"plan.{name}"
        if key not in row.index:
            continue
        value = row[key]
        if value is None or (not isinstance(value, (list, str)) and pd.isna(value)):
            value = None
        elif name == "pp_layers":
            value = ast.literal_eval(value)
        elif isinstance(value, (np.integer, np.bool_, np.floating)):
            value = value.item()
        plan[name] = value
    return plan


def _estimate_plan(args: dict) -> dict:
    given = {k: v for k, v in args.items() if not (k in MODE_ONLY and MODE_ONLY[k][0] != args["mode"])}
    if given["mode"] == "inference" and given.get("recompute") is not None:
        given.pop("recompute")
    return perfsim.estimate(**given)["plan"]


TRAIN_AXES = {"mode": ["train"], "tp": [1, 2], "zero": [None, 3], "runtime": [None, "megatron-2021", "deepspeed"],
              "offload_optimizer": ["none", "cpu"]}


OFFLOAD_AXES = {"mode": ["inference"], "offload_weights": ["auto", "cpu"], "offload_kv": ["auto", "none"],
                "batch": [8, 64]}


@pytest.mark.parametrize("axes", [AXES, TRAIN_AXES, OFFLOAD_AXES], ids=["both-modes", "train-engines", "offload-auto"])
def test_every_sweep_row_carries_the_estimates_resolved_plan(axes):
    fixed = OFFLOADED if axes is OFFLOAD_AXES else FIXED
    df = perfsim.sweep(**fixed, **axes)
    combos = [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]
    assert len(df) == len(combos)
    for (_, row), combo in zip(df.iterrows(), combos, strict=True):
        expected = _estimate_plan({**fixed, **combo})
        got = {k: v for k, v in _row_plan(row).items() if not (k in MODE_ONLY and MODE_ONLY[k][0] != combo["mode"])}
        assert got == expected, combo


def test_plan_columns_cover_every_argument_of_the_mode_and_keep_integers_integer():
    df = perfsim.sweep(model="llama2-7b", hardware="a100-80gb", mode="train", num_devices=8, tp=[1, 2])
    names = {c.removeprefix("plan.") for c in df.columns if c.startswith("plan.")}
    assert names == {n for n in ARGUMENTS if MODE_ONLY.get(n, ("train",))[0] == "train"}
    for name in ("num_devices", "tp", "pp", "dp", "zero", "global_batch", "micro_batch", "seq_len"):
        assert pd.api.types.is_integer_dtype(df[f"plan.{name}"]), name
    assert list(df["plan.recompute"].astype(str)) == [perfsim.estimate(model="llama2-7b", hardware="a100-80gb",
                                                                        mode="train", num_devices=8, tp=tp)["plan"]
                                                      ["recompute"] for tp in (1, 2)]
    assert df["plan.runtime"].iloc[0] == "megatron"
    assert df["plan.pp_layers"].iloc[0] == "[32]"


def test_inference_sweep_leaves_out_the_training_arguments():
    df = perfsim.sweep(model="llama2-7b", hardware="a100-80gb", batch=[1, 4])
    assert "plan.seq_len" not in df.columns and "plan.recompute" not in df.columns
    assert df["plan.batch"].tolist() == [1, 4] and df["plan.batch"].dtype == np.int64
    assert df["plan.runtime"].iloc[0] == "trt-llm"


def test_chunks_share_the_plan_columns_schema():
    sp = space({**FIXED, **AXES})
    frames = [chunk_frame(sp, a, b) for a, b in chunk_bounds(sp.n, 3)]
    dtypes = {str(f[[c for c in f.columns if c.startswith("plan.")]].dtypes.to_dict()) for f in frames}
    assert len(dtypes) == 1
    whole = pd.concat(frames, ignore_index=True)
    assert isinstance(whole["plan.runtime"].dtype, pd.CategoricalDtype)


@pytest.mark.parametrize("hardware", [{"base": "a100-80gb", "hbm_bandwidth_gb_s": [1500, 2000]}])
def test_what_if_hardware_names_its_base(hardware):
    df = perfsim.sweep(model="llama2-7b", hardware=hardware)
    assert df["plan.hardware"].tolist() == ["a100-80gb", "a100-80gb"]
    assert df["hardware.hbm_bandwidth_gb_s"].tolist() == [1500, 2000]
