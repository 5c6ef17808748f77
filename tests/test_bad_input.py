"""Malformed input of every kind: a clear InputError naming the field (exit 2 on the command line)."""

import errno
import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import perfsim
import perfsim.explore.files
from perfsim.cli import cli
from perfsim.errors import InputError
from perfsim.explore.files import read_spec
from perfsim.plan.arguments import ARGUMENT_TABLE

SMALL = {"model": "llama3.2-1b", "hardware": "a100-80gb"}
NOT_FINITE = [float("nan"), float("inf"), -float("inf"), 10**400]
INTS = [a.name for a in ARGUMENT_TABLE if a.kind == "int"]
NUMBERS = [a.name for a in ARGUMENT_TABLE if a.kind in ("pos", "pue", "frac", "share")]


def run(*args):
    return CliRunner().invoke(cli, list(args))


def refused(result, field):
    """The command exited 2 with one line naming ``field``, and no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], result.output


@pytest.mark.parametrize("value", [*NOT_FINITE, 1e300, 2**53 + 2], ids=repr)
@pytest.mark.parametrize("name", INTS)
def test_integer_arguments_refuse_numbers_that_are_not_finite_whole_and_bounded(name, value):
    for mode in ("inference", "train"):
        with pytest.raises(InputError, match=rf"^{name}: ") as info:
            perfsim.estimate(**SMALL, mode=mode, **{name: value})
        assert len(str(info.value)) < 200


@pytest.mark.parametrize("value", NOT_FINITE, ids=repr)
@pytest.mark.parametrize("name", NUMBERS)
def test_number_arguments_refuse_numbers_that_are_not_finite(name, value):
    with pytest.raises(InputError, match=rf"^{name}: expected "):
        perfsim.estimate(**SMALL, **{name: value})


@pytest.mark.parametrize("value", ["1e400", "-1e400", ".nan", ".inf", "1" + "0" * 30, "1" + "0" * 5000])
def test_cli_integer_options_refuse_huge_and_infinite_values(value):
    refused(run("estimate", "--model", "llama3.2-1b", "--hardware", "a100-80gb", "--tp", value), "tp")
    refused(run("gemm", "--hardware", "a100-80gb", "--m", "1" + "0" * 30, "--n", "1", "--k", "1"), "m")
    refused(run("collective", "--hardware", "a100-80gb", "--size-bytes", value, "--num-devices", "8"), "size_bytes")


@pytest.mark.parametrize("value", [".nan", "inf", ".inf", "1e400", "-1"])
def test_whatif_values_must_be_finite_and_positive(value):
    field = "hardware.hbm_bandwidth_gb_s"
    refused(run("estimate", "--model", "llama3.2-1b", "--hardware", "a100-80gb", "--set",
                f"hbm_bandwidth_gb_s={value}"), field)
    for number in NOT_FINITE:
        whatif = {"base": "a100-80gb", "hbm_bandwidth_gb_s": number}
        with pytest.raises(InputError, match=re.escape(field)):
            perfsim.estimate(model="llama3.2-1b", hardware=whatif)
        with pytest.raises(InputError, match=re.escape(field)):
            perfsim.gemm(whatif, 64, 64, 64)
        with pytest.raises(InputError, match=re.escape(field)):
            perfsim.sweep(model="llama3.2-1b", hardware={**whatif, "hbm_bandwidth_gb_s": [1000, number]})


@pytest.mark.parametrize("key", ["bandwidth_gb_s", "capacity_gib", "compute_units"])
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1" + "0" * 400])
def test_hardware_yaml_refuses_numbers_that_are_not_finite(tmp_path, key, value):
    lines = open("hardware_specs/h100-sxm.yaml").read().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.strip().startswith(key + ":"))
    lines[line - 1] = lines[line - 1].split(":")[0] + ": " + value
    path = tmp_path / "h100-broken.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=rf"{re.escape(str(path))}:{line}: device\..*{key}: ") as info:
        perfsim.estimate(model="llama3.2-1b", hardware=str(path))
    assert len(str(info.value)) < len(str(path)) + 200


def test_tdp_given_as_nan_is_refused(tmp_path):
    text = open("hardware_specs/h100-sxm.yaml").read().replace("tdp_w: {value: 700,", "tdp_w: {value: .nan,")
    path = tmp_path / "h100-nan-tdp.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match="device.power.tdp_w: expected a finite number, got nan"):
        perfsim.estimate(model="llama3.2-1b", hardware=str(path))


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1" + "0" * 400, "1" + "0" * 5000, "1e400"])
def test_model_config_json_refuses_numbers_that_are_not_finite(tmp_path, value):
    config = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
              "intermediate_size": 128, "hidden_act": "silu"}
    text = json.dumps(config).replace('"num_hidden_layers": 2', f'"num_hidden_layers": {value}')
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(InputError, match=rf"{re.escape(str(path))}.*model"):
        perfsim.estimate(model=str(path), hardware="a100-80gb")
    refused(run("estimate", "--model", str(path), "--hardware", "a100-80gb"), str(path))


@pytest.mark.parametrize("value", [".nan", ".inf", "1" + "0" * 400, "1" + "0" * 5000])
def test_model_yaml_refuses_numbers_that_are_not_finite(tmp_path, value):
    text = open("workloads/llama3.2-1b.yaml").read().replace("hidden_size: 2048", f"hidden_size: {value}")
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=re.escape(str(path))):
        perfsim.estimate(model=str(path), hardware="a100-80gb")


def test_runtime_whatif_refuses_numbers_that_are_not_finite():
    for value in NOT_FINITE:
        with pytest.raises(InputError, match="runtime.tp_overlap: expected a finite number"):
            perfsim.estimate(**SMALL, runtime={"base": "vllm", "tp_overlap": value})


@pytest.mark.parametrize("axes, field", [
    ("tp: [1, .nan]", "tp"), ("batch: [.inf]", "batch"), ("tp: {range: [1, .inf, 1]}", "tp"),
    ("tp: {range: [1, 1000000000000000, 1]}", "tp"), ("batch: {logrange: [1, 100, 1000000000000]}", "batch"),
    ("gpu_memory_utilization: [.nan]", "gpu_memory_utilization"), ("hardware: {base: a100-80gb, tdp_w: .nan}",
                                                                   "hardware.tdp_w"),
])
def test_sweep_specs_refuse_numbers_that_are_not_finite(tmp_path, axes, field):
    spec = tmp_path / "s.yaml"
    spec.write_text(f"fixed: {{model: llama3.2-1b}}\naxes:\n  {axes}\n" + ("" if "hardware" in axes else
                                                                         "  hardware: a100-80gb\n"))
    refused(run("sweep", str(spec), "--out", str(tmp_path / "o.csv")), field)
    with pytest.raises(InputError, match=re.escape(field)):
        args, _ = read_spec(str(spec))
        perfsim.sweep(**args)


def test_offload_fractions_refuse_numbers_that_are_not_finite():
    for value in NOT_FINITE:
        with pytest.raises(InputError, match="offload_weights: the gpu fraction must be a number"):
            perfsim.estimate(**SMALL, offload_weights={"gpu": value, "cpu": 0.5})


@pytest.mark.parametrize("name", ["num_requests", "max_batch", "arrival_rate", "ttft_slo_s", "seed"])
def test_serve_options_refuse_numbers_that_are_not_finite(name):
    for value in NOT_FINITE:
        with pytest.raises(InputError, match=rf"^{name}: "):
            perfsim.serve(**{**SMALL, "num_requests": 5, name: value})


@pytest.mark.parametrize("value", [*NOT_FINITE, {"dist": "lognormal", "mean": 10**400, "sigma": 1},
                                   {"dist": "fixed", "value": float("inf")}], ids=repr)
def test_serve_lengths_refuse_numbers_that_are_not_finite(value):
    with pytest.raises(InputError, match=r"^prompt_len(\.\w+)?: expected a "):
        perfsim.serve(**SMALL, num_requests=5, prompt_len=value)


# --- None for an argument means its default ---
@pytest.mark.parametrize("mode", ["inference", "train"])
def test_none_for_any_argument_means_its_default(mode):
    plain = perfsim.estimate(**SMALL, mode=mode)
    for a in ARGUMENT_TABLE:
        if a.name not in ("model", "hardware", "mode"):
            assert perfsim.estimate(**SMALL, mode=mode, **{a.name: None}) == plain, a.name
    assert perfsim.estimate(**SMALL, mode=None) == perfsim.estimate(**SMALL)
    whatif = {"base": "a100-80gb", "tdp_w": None, "hbm_bandwidth_gb_s": None}
    assert perfsim.estimate(model="llama3.2-1b", hardware=whatif, mode=mode)["feasible"] == plain["feasible"]
    assert perfsim.gemm(whatif, 64, 64, 64, dtype=None) == perfsim.gemm("a100-80gb", 64, 64, 64)


def test_none_in_serve_and_sweep_means_the_default():
    options = dict(num_requests=20, prompt_len=128, gen_len=8)
    plain = perfsim.serve(**SMALL, **options)
    assert perfsim.serve(**SMALL, **options, tp=None, max_batch=None, scheduler=None, seed=None, dtype=None) == plain
    base = perfsim.sweep(**SMALL, batch=[1, 2])
    assert perfsim.sweep(**SMALL, batch=[1, 2], tp=None, backend=None).equals(base)


@pytest.mark.parametrize("name, values", [("tp", [1, None, 2]), ("mode", ["train", None]), ("seq_len", [None, 2048]),
                                          ("hardware.tdp_w", [300, None])])
def test_null_in_a_sweep_list_is_refused_where_the_default_is_a_value(tmp_path, name, values):
    args = dict(SMALL)
    if name.startswith("hardware."):
        args["hardware"] = {"base": "a100-80gb", name.split(".")[1]: values}
    else:
        args[name] = values
    with pytest.raises(InputError, match=rf"^{re.escape(name)}: null in a list of values: write "):
        perfsim.sweep(**args)
    if name == "tp":
        spec = tmp_path / "s.yaml"
        spec.write_text("model: llama3.2-1b\nhardware: a100-80gb\naxes:\n  tp: [1, null, 2]\n")
        refused(run("sweep", str(spec), "--out", str(tmp_path / "o.csv")), "tp: null in a list")
        assert not (tmp_path / "o.csv").exists()


def test_null_in_a_sweep_list_is_the_default_where_the_default_is_none():
    df = perfsim.sweep(**SMALL, power_cap_w=[None, 200.0], runtime=[None, "vllm"])
    assert len(df) == 4 and df["feasible"].all()


# --- operating-system and decoding errors ---
LONG = "x" * 5000


@pytest.fixture
def odd_files(tmp_path):
    """A FIFO, a binary file, a folder and names the OS refuses, each as a .yaml and a .json."""
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    (tmp_path / "folder.yaml").mkdir()
    return {"fifo": (str(fifo), "not a regular file"), "binary": (str(binary), "not UTF-8 text"),
            "folder": (str(tmp_path / "folder.yaml"), "not a regular file"),
            "long": (str(tmp_path / (LONG + ".yaml")), "File name too long"),
            "nul": (str(tmp_path / "a\0b.yaml"), "NUL byte"),
            "long-json": (str(tmp_path / (LONG + ".json")), "File name too long"),
            "missing-json": (str(tmp_path / "none.json"), "No such file")}


@pytest.mark.parametrize("field", ["model", "hardware"])
def test_odd_model_and_hardware_files_are_refused_without_hanging(odd_files, field):
    for kind, (path, needle) in odd_files.items():
        if field == "hardware" and kind.endswith("json"):
            continue
        with pytest.raises(InputError, match=needle) as info:
            perfsim.estimate(**{**SMALL, field: path})
        assert field in str(info.value) and len(str(info.value)) < 400 and "\0" not in str(info.value), kind
        if kind != "nul":  # a command line cannot carry a NUL byte
            refused(run("estimate", "--model", SMALL["model"], "--hardware", SMALL["hardware"],
                        f"--{field}", path), field)
    for name in (LONG, "a\0b"):  # names that are not files: unknown, with no file access
        with pytest.raises(InputError, match=f"unknown {field}"):
            perfsim.estimate(**{**SMALL, field: name})


def test_odd_spec_trace_and_length_files_are_refused_without_hanging(odd_files, tmp_path):
    for kind, (path, needle) in odd_files.items():
        if not kind.endswith("json"):
            with pytest.raises(InputError, match=needle):
                read_spec(path)
            if kind != "nul":
                refused(run("sweep", path, "--out", str(tmp_path / "o.csv")), "spec")
                refused(run("plot", "timeline", path, "--out", str(tmp_path / "t.png")), "trace")
        for name in ("trace", "prompt_len"):
            with pytest.raises(InputError, match=rf"{name}: "):
                perfsim.serve(**SMALL, num_requests=3, **{name: path})


@pytest.mark.parametrize("out, needle", [
    ("{tmp}/" + "y" * 300 + ".csv", "File name too long"), ("{tmp}/no/o.csv", "does not exist"),
    ("{tmp}/file.txt/o.csv", "Not a directory"), ("{tmp}", "is a directory"), ("{tmp}/a\0b.csv", "NUL byte"),
    ("{tmp}/" + "y" * 250 + ".csv", "File name too long"),  # the name fits, OUT.partial beside it does not
])
def test_sweep_output_that_cannot_be_written_is_refused(tmp_path, out, needle):
    (tmp_path / "file.txt").write_text("x")
    out = out.format(tmp=tmp_path)
    with pytest.raises(InputError, match=rf"^--out: .*{needle}"):
        perfsim.explore.files.write_sweep({**SMALL, "tp": [1, 2]}, out)
    if "\0" not in out:
        spec = tmp_path / "s.yaml"
        spec.write_text("model: llama3.2-1b\nhardware: a100-80gb\n")
        refused(run("sweep", str(spec), "--out", out), "--out")


def test_sweep_to_a_read_only_disk_is_refused(tmp_path, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    spec = tmp_path / "s.yaml"
    spec.write_text("model: llama3.2-1b\nhardware: a100-80gb\n")
    refused(run("sweep", str(spec), "--out", str(tmp_path / "o.csv")), "--out: cannot write")
    assert "Read-only file system" in run("sweep", str(spec), "--out", str(tmp_path / "o.csv")).output
    assert not (tmp_path / "o.csv").exists()
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    refused(run("sweep", str(spec), "--out", str(tmp_path / "o.csv")), "permission denied")


def test_files_too_large_or_nested_too_deeply_are_refused(tmp_path):
    from perfsim.specs.paths import read_text

    path = tmp_path / "big.yaml"
    path.write_text("a: 1\n" * 100)
    with pytest.raises(InputError, match="at most 10"):
        read_text(path, "model", limit=10)
    path.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(InputError, match="nested too deeply"):
        perfsim.estimate(model=str(path), hardware="a100-80gb")
    path = tmp_path / "config.json"
    path.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(InputError, match="nested too deeply"):
        perfsim.estimate(model=str(path), hardware="a100-80gb")
