"""Sweeps at scale: chunks, spec files, constraints, atomic and resumable output, backends."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import perfsim
from perfsim.cli import cli
from perfsim.errors import InputError
from perfsim.explore import chunks
from perfsim.explore.constraints import Constraint, parse_constraints
from perfsim.explore.files import read_spec, write_sweep

pq = pytest.importorskip("pyarrow.parquet")

ARGS = {"model": ["llama2-7b", "llama2-70b"], "hardware": {"base": "h100-sxm", "hbm_bandwidth_gb_s": [2000, 3350]},
        "tp": [1, 2, 4, 8], "batch": [1, 4, 16, 64], "prompt_len": [512, 2048], "gen_len": 128}
MEMORY_FITS = "memory_per_device_gib.total <= memory_per_device_gib.capacity"


def _read(path):
    return pd.read_parquet(path) if str(path).endswith(".parquet") else pd.read_csv(path)


def _same(a: pd.DataFrame, b: pd.DataFrame):
    """Same rows and values (labels compared as text, numbers exactly)."""
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    for col in a.columns:
        x, y = a[col], b[col]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(x):
            np.testing.assert_array_equal(x.to_numpy(dtype=float), y.to_numpy(dtype=float), err_msg=col)
        else:
            assert [None if pd.isna(v) else str(v) for v in x] == [None if pd.isna(v) else str(v) for v in y], col


def test_chunked_sweep_equals_one_pass():
    whole = perfsim.sweep(**ARGS, mode=["inference", "train"])
    pd.testing.assert_frame_equal(whole, perfsim.sweep(**ARGS, mode=["inference", "train"], chunk_rows=37))


def test_space_blocks_are_the_grid_rows():
    from perfsim.plan.grid import expand, space

    args = {"model": "llama2-7b", "hardware": "a100-80gb", "tp": [1, 2, 4], "batch": [1, 2, 3, 4, 5]}
    grid, s = expand(args), space(args)
    block = s.block(4, 11)
    for name in ("tp", "batch"):
        np.testing.assert_array_equal(block.codes(name), grid.codes(name)[4:11])


def test_constraints_filter_or_flag_rows():
    df = perfsim.sweep(**ARGS)
    kept = perfsim.sweep(**ARGS, constraints=[MEMORY_FITS, "ttft_s < 0.5"])
    ok = df["feasible"] & (df["memory_per_device_gib.total"] <= df["memory_per_device_gib.capacity"]) \
        & (df["ttft_s"] < 0.5)
    assert 0 < len(kept) == ok.sum() < len(df)
    _same(kept, df[ok].reset_index(drop=True))
    flagged = perfsim.sweep(**ARGS, constraints="ttft_s < 0.5 and tp <= 4", keep_infeasible=True)
    assert len(flagged) == len(df)
    np.testing.assert_array_equal(flagged["meets_constraints"],
                                  df["feasible"] & (df["ttft_s"] < 0.5) & (df["tp"] <= 4))


def test_constraint_language():
    t = {"a": np.array([1.0, 2.0, np.nan]), "b": np.array([3.0, 1.0, 1.0]), "ok": np.array([True, False, True]),
         "model": pd.Categorical(["x", "y", "x"])}
    assert Constraint("a < b").evaluate(t).tolist() == [True, False, False]  # NaN compares false
    assert Constraint("1 <= a <= 1.5 or not ok").evaluate(t).tolist() == [True, True, False]
    assert Constraint("2 * a - 1 >= b / 3").evaluate(t).tolist() == [True, True, False]
    assert Constraint("2 * a - 1 > b / 3 + 1").evaluate(t).tolist() == [False, True, False]
    assert Constraint("model == 'x' and ok").evaluate(t).tolist() == [True, False, True]
    assert Constraint("(a < 5) and -a < 0 and 1e-3 < a").evaluate(t).tolist() == [True, True, False]
    for bad in ("__import__('os').system('x')", "a < ", "a <> b", "a; b", "", "a < b)", "lambda: 1", "a"):
        with pytest.raises(InputError):
            Constraint(bad).evaluate(t)


def test_unknown_column_names_close_matches():
    with pytest.raises(InputError, match="did you mean 'ttft_s'"):
        perfsim.sweep(**ARGS, constraints=["tfft_s < 0.5"])
    with pytest.raises(InputError, match="memory_per_device_gib.total"):
        perfsim.sweep(**ARGS, constraints=["total <= 80"])
    with pytest.raises(InputError, match=r"constraints\[1\]"):
        parse_constraints(["ttft_s < 1", "ttft_s <"])


def test_spec_sections_and_ranges(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("axes:\n  tp: {range: [1, 4, 1]}\n  batch: {logrange: [1, 256, 9]}\n"
                    "  gpu_memory_utilization: {range: [0.8, 0.9, 0.05]}\n"
                    "fixed: {model: llama2-7b, hardware: {base: h100-sxm, hbm_bandwidth_gb_s: [2000, 4000]}}\n"
                    "constraints: [ttft_s < 1]\n")
    args, constraints = read_spec(spec)
    assert args["tp"] == [1, 2, 3, 4]
    assert args["batch"] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert args["gpu_memory_utilization"] == pytest.approx([0.8, 0.85, 0.9])
    assert constraints == ["ttft_s < 1"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: llama2-7b\nhardware: h100-sxm\naxes:\n  tp: {range: [1, 4]}\n")
    with pytest.raises(InputError, match=r"bad.yaml:4: tp: range takes a list of 3 numbers"):
        read_spec(bad)
    twice = tmp_path / "twice.yaml"
    twice.write_text("model: llama2-7b\nhardware: h100-sxm\naxes:\n  model: [llama2-7b]\n")
    with pytest.raises(InputError, match="twice.yaml:4: model: given twice"):
        read_spec(twice)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_file_sweep_matches_api_and_is_atomic(tmp_path, suffix):
    out = tmp_path / f"r{suffix}"
    summary = write_sweep(ARGS, out, [MEMORY_FITS], chunk_rows=20)
    expected = perfsim.sweep(**ARGS, constraints=[MEMORY_FITS])
    assert summary["rows"] == len(expected) and summary["chunks"] == 7
    _same(_read(out), expected)
    assert not (tmp_path / f"r{suffix}.partial").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"r{suffix}"]
    with pytest.raises(InputError, match="exists"):  # never replaced unless asked
        write_sweep(ARGS, out)
    write_sweep({**ARGS, "tp": 8}, out, overwrite=True)
    assert len(_read(out)) == 32


class _Interrupt:
    """chunk_frame that raises KeyboardInterrupt (Ctrl-C) when asked for its ``after + 1``-th chunk."""

    def __init__(self, real, after):
        self.real, self.after, self.calls = real, after, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls > self.after >= 0:
            raise KeyboardInterrupt
        return self.real(*args, **kwargs)


def test_interrupted_sweep_resumes(tmp_path, monkeypatch):
    reference = tmp_path / "ref.parquet"
    write_sweep(ARGS, reference, ["ttft_s < 2"], keep_infeasible=True, chunk_rows=16)
    out = tmp_path / "r.parquet"
    real = chunks.chunk_frame
    monkeypatch.setattr(chunks, "chunk_frame", _Interrupt(real, 4))  # a one-row check of the columns, 3 chunks
    with pytest.raises(KeyboardInterrupt):
        write_sweep(ARGS, out, ["ttft_s < 2"], keep_infeasible=True, chunk_rows=16)
    assert not out.exists()
    manifest = json.loads((tmp_path / "r.parquet.partial" / "manifest.json").read_text())
    assert manifest["done"] == [0, 1, 2] and manifest["chunks"] == 8
    # another spec at the same --out does not silently take the unfinished run's place
    monkeypatch.setattr(chunks, "chunk_frame", real)
    with pytest.raises(InputError, match="--restart"):
        write_sweep(ARGS, out, ["ttft_s < 3"], keep_infeasible=True, chunk_rows=16)
    counter = _Interrupt(real, -1)
    monkeypatch.setattr(chunks, "chunk_frame", counter)
    summary = write_sweep(ARGS, out, ["ttft_s < 2"], keep_infeasible=True, chunk_rows=16)
    assert counter.calls == 1 + 5 and summary["resumed_chunks"] == 3
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(reference))


def test_killed_sweep_process_resumes(tmp_path):
    """A hard kill (SIGKILL) half way through a 1M-row sweep leaves a state the next run resumes."""
    spec = tmp_path / "big.yaml"
    spec.write_text("model: llama2-70b\nhardware: h100-sxm\ntp: [1, 2, 4, 8]\nbatch: {range: [1, 250, 1]}\n"
                    "prompt_len: {range: [128, 3296, 32]}\ngen_len: [16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536]\n")
    out = tmp_path / "big.parquet"
    cmd = [sys.executable, "-m", "perfsim.cli", "sweep", str(spec), "--out", str(out), "--chunk-rows", "65536"]
    env = {**os.environ, "PYTHONPATH": str(Path(perfsim.__file__).parent.parent)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    manifest = tmp_path / "big.parquet.partial" / "manifest.json"
    deadline = time.monotonic() + 120
    done = []
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists():
            try:
                done = json.loads(manifest.read_text())["done"]
            except ValueError:  # pragma: no cover - the manifest is replaced atomically
                done = []
            if len(done) >= 4:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 4 <= len(done) < 16 and not out.exists()
    resumed = subprocess.run([*cmd, "--format", "json"], env=env, capture_output=True, text=True, check=True)
    summary = json.loads(resumed.stdout)
    assert summary["total_rows"] == summary["rows"] == 1_000_000 and summary["resumed_chunks"] >= 4
    got = pd.read_parquet(out, columns=["tp", "batch", "prompt_len", "gen_len", "tpot_s", "feasible"])
    args, _ = read_spec(spec)
    expected = perfsim.sweep(**args)
    for col in got.columns:
        np.testing.assert_array_equal(got[col].to_numpy(), expected[col].to_numpy(), err_msg=col)


def test_cli_sweep_errors_exit_2(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("model: llama2-7b\nhardware: h100-sxm\ntp: [1, 2]\nconstraints: [tpot < 0.1]\n")
    r = CliRunner().invoke(cli, ["sweep", str(spec), "--out", str(tmp_path / "r.parquet")])
    assert r.exit_code == 2 and "did you mean 'tpot_s'" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "r.parquet.partial").exists()
    r = CliRunner().invoke(cli, ["sweep", str(spec), "--out", str(tmp_path / "r.txt")])
    assert r.exit_code == 2 and "--out" in r.output
    r = CliRunner().invoke(cli, ["sweep", str(spec), "--out", str(spec.with_suffix(".csv")), "--backend", "spark"])
    assert r.exit_code == 2 and "backend" in r.output
    spec.write_text("model: llama2-7b\nhardware: h100-sxm\ntp: [1, 2]\nconstraints: [tpot_s < 0.1]\n")
    r = CliRunner().invoke(cli, ["sweep", str(spec), "--out", str(tmp_path / "r.csv"), "--keep-infeasible",
                                 "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["rows"] == 2
    assert "meets_constraints" in pd.read_csv(tmp_path / "r.csv").columns


def test_dask_backend_matches_local(tmp_path):
    distributed = pytest.importorskip("distributed")
    local = perfsim.sweep(**ARGS, constraints=[MEMORY_FITS])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        remote = perfsim.sweep(**ARGS, constraints=[MEMORY_FITS], backend="dask", scheduler=client, chunk_rows=10)
        pd.testing.assert_frame_equal(local, remote)
        out = tmp_path / "r.parquet"
        r = CliRunner().invoke(cli, ["sweep", _spec(tmp_path), "--out", str(out), "--backend", "dask",
                                     "--scheduler", cluster.scheduler_address, "--chunk-rows", "10"])
        assert r.exit_code == 0, r.output
    _same(pd.read_parquet(out), local)


def _spec(tmp_path):
    spec = tmp_path / "spec.yaml"
    text = {**ARGS, "constraints": [MEMORY_FITS]}
    spec.write_text(json.dumps(text))  # JSON is YAML
    return str(spec)


GRIDS = [
    dict(model=["llama2-7b", "mixtral-8x7b"], hardware={"base": "h100-sxm", "hbm_bandwidth_gb_s": [2000, 3350]},
         tp=[1, 2, 8], batch=[1, 3, 64], prompt_len=[128, 2048], gen_len=[1, 64], mode=["inference", "train"]),
    dict(model="llama2-70b", hardware="a100-80gb", mode="train", num_devices=[8, 64], tp=[1, 2, 8], pp=[1, 2, 4],
         zero=[0, 3], recompute=["none", "selective", "full"], schedule=["1f1b", "interleaved", "zero-bubble"],
         virtual_stages=[1, 2], micro_batch=[1, 2], global_batch=[64, 96]),
    dict(model="opt-30b", hardware=["t4", "a100-80gb"], dtype="fp16", batch=[8, 80], micro_batch=[20, 40],
         prompt_len=[512, 1024], gen_len=32, offload_weights=["none", "cpu", "gpu=0.04,cpu=0.96"], offload_kv=["none", "cpu"]),
    dict(model="llama2-7b", hardware=["npu-pim", "a100a-attacc", "h100-pim"], dtype="fp16", batch=[1, 64, 256],
         place=[{}, {"decode_attention": "pim"}], prompt_len=[256, 1024], tp=[1, 8]),
    dict(model="deepseek-v3", hardware="h200", tp=[4, 8], ep=[1, 8], dp=[1, 2], batch=[1, 64],
         mode=["inference", "train"], weight_dtype=["fp8", "int4"], kv_dtype=["fp8", "bf16"]),
    dict(model="mixtral-8x7b", hardware={"base": "h100-sxm", "devices_per_node": [4, 8], "scaleup_gb_s": [450, 900]},
         mode="train", num_devices=16, tp=[1, 2], ep=[1, 8], zero=[0, 3], zero_shard_size=[None, 2],
         capacity_factor=[1.0, 1.25], finetune=["full", "lora"], runtime=[None, "torchtitan"], kv_dtype=["bf16", "fp8"],
         recompute="full", seq_len=2048, global_batch=32),
]


@pytest.mark.parametrize("box_rows", [1 << 16, 50])
@pytest.mark.parametrize("args", GRIDS, ids=["mixed-modes", "training", "offload", "pim", "moe-mla", "what-ifs"])
def test_boxes_give_the_rows_results(args, box_rows, monkeypatch):
    """Evaluating boxes of the design space (columns broadcast over the axes they depend on) gives
    the same results, value for value, as evaluating the rows one block at a time."""
    from perfsim.analytical import evaluate as core
    from perfsim.plan.grid import expand, space

    reference = core.evaluate_grid(expand(args))
    monkeypatch.setattr(core, "_CHUNK", box_rows)
    s = space(args)
    _, boxed = core.evaluate_rows(s, 0, s.n)
    assert set(boxed) == set(reference)
    for key, value in reference.items():
        if value.dtype == object:
            assert list(boxed[key]) == list(value), key
        else:
            np.testing.assert_array_equal(boxed[key], value, err_msg=key)


def test_dense_rows_beside_moe_rows_keep_their_flops():
    """A dense model's rows do no expert GEMM work, whatever else the sweep holds."""
    mixed = perfsim.sweep(model=["llama2-7b", "mixtral-8x7b"], hardware="h100-sxm", batch=[1, 8])
    alone = perfsim.sweep(model="llama2-7b", hardware="h100-sxm", batch=[1, 8])
    for key in ("breakdown.prefill.flops", "breakdown.decode.flops", "power_w_per_device", "energy_j"):
        np.testing.assert_array_equal(mixed[key].to_numpy()[:2], alone[key].to_numpy(), err_msg=key)
        assert np.isfinite(mixed[key]).all()


def test_chunks_with_different_keys_join(tmp_path):
    """A chunk of GPU rows lacks the NPU engine keys of a chunk of NPU rows: the file and the
    DataFrame hold every key, missing where a row has no such device."""
    args = dict(hardware=["a100-80gb", "npu-pim"], model="llama2-7b", dtype="fp16", batch=[1, 8, 64])
    whole = perfsim.sweep(**args, chunk_rows=3)
    assert whole["breakdown.decode.vector_ops"][:3].isna().all()
    assert (whole["breakdown.decode.vector_ops"][3:] > 0).all()
    for suffix in (".parquet", ".csv"):
        write_sweep(args, tmp_path / f"r{suffix}", chunk_rows=3)
        _same(_read(tmp_path / f"r{suffix}"), whole)


def test_counts_stay_whole_numbers_in_a_sweep():
    df = perfsim.sweep(model="llama2-7b", hardware="a100-80gb", tp=[1, 2], mode="train", num_devices=8)
    assert df["dp"].dtype.kind == "i" and df["dp"].tolist() == [8, 4]
    assert df["num_devices"].tolist() == [8, 8]


def test_default_chunks_end_where_boxes_end():
    """An in-memory or file sweep's chunks, where none are given, hold whole boxes of the evaluation:
    a chunk of 2**17 rows would cut the last box of a plane of 65,000 into boxes of a few rows."""
    from perfsim.explore.chunks import default_chunk_rows
    from perfsim.plan.grid import space

    s = space(dict(model="llama2-7b", hardware="h100-sxm", tp=[1, 2, 4, 8], batch=list(range(1, 251)),
                   prompt_len=list(range(128, 3328, 32)), gen_len=list(range(16, 96, 8))))
    assert s.box_rows(1 << 16) == 65 * 100 * 10  # 65 batches of every prompt and generated length
    rows = default_chunk_rows(s)
    assert rows == 2 * 65_000
    sizes = [box.n for start in range(0, s.n, rows) for _, box in s.boxes(start, min(s.n, start + rows), 1 << 16)]
    assert sum(sizes) == s.n and min(sizes) >= 1000 and len(sizes) == 19  # (2**17 rows a chunk: 46 boxes, of 2 rows and up)
    assert default_chunk_rows(space(dict(model="llama2-7b", hardware="h100-sxm", batch=[1, 2]))) == 1 << 17
