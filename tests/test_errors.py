"""Bad input: a clear InputError (exit code 2 on the CLI), never a traceback; impossible plans are infeasible."""

import pickle

import pytest
from click.testing import CliRunner
from tiny_spec import tiny_spec

import perfsim
from perfsim.cli import cli
from perfsim.specs.hardware import parse_hardware
from perfsim.specs.yamlio import loads_yaml


def run(*args):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize("argv, needle", [
    (["estimate", "--model", "llama2-70", "--hardware", "a100-80gb"], "did you mean 'llama2-70b'"),
    (["estimate", "--model", "llama2-7b", "--hardware", "h100"], "unknown hardware"),
    (["estimate", "--model", "llama2-7b", "--hardware", "a100-80gb", "--batch", "-3"], "batch"),
    (["estimate", "--model", "llama2-7b", "--hardware", "a100-80gb", "--tp", "1.5"], "tp"),
    (["estimate", "--model", "llama2-7b", "--hardware", "a100-80gb", "--dtype", "bf61"], "did you mean 'bf16'"),
    (["estimate", "--model", "llama2-7b", "--hardware", "a100-80gb", "--set", "hbm_bandwith_gb_s=1"],
     "did you mean 'hbm_bandwidth_gb_s'"),
    (["gemm", "--hardware", "a100-80gb", "--m", "0", "--n", "1", "--k", "1"], "m"),
    (["collective", "--hardware", "a100-80gb", "--op", "allreduce", "--size-bytes", "100", "--num-devices", "8"],
     "all_reduce"),
    (["memcpy", "--hardware", "a100-80gb", "--size-bytes", "100", "--src", "ssd"], "unknown memory tier"),
])
def test_cli_bad_input_exits_2(argv, needle):
    result = run(*argv)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("hidden_size: 4096\nnum_hidden_layers: [32\n")
    result = run("estimate", "--model", str(bad), "--hardware", "a100-80gb")
    assert result.exit_code == 2
    assert f"{bad}:" in result.output and "malformed YAML" in result.output


def test_hardware_number_without_source_is_rejected():
    text = """
name: x
description: test
kind: gpu
device:
  compute: {peak_tflops: {bf16: 100}, source: s}
  architecture: {compute_units: 10}
  memory: {hbm: {capacity_gib: 10, bandwidth_gb_s: 100, source: s}}
  efficiency: {gemm_max: 0.8, memory_max: 0.8, source: s}
  power: {tdp_w: 100}
node: {devices_per_node: 1, source: s}
"""
    with pytest.raises(perfsim.InputError) as info:
        parse_hardware(loads_yaml(text, "x.yaml"))
    assert "no source" in str(info.value) and "x.yaml:7" in str(info.value)
    assert "device.architecture.compute_units" in str(info.value)


def test_unknown_spec_key_suggests():
    with pytest.raises(perfsim.InputError) as info:
        parse_hardware(loads_yaml("name: x\ndescription: d\nkind: gpu\ndevise: {}\n", "x.yaml"))
    assert "did you mean 'device'" in str(info.value)


def test_input_error_is_value_error_and_pickles():
    err = perfsim.InputError("bad", field="tp", value="x", choices=["tp"])
    assert isinstance(err, ValueError)
    assert str(pickle.loads(pickle.dumps(err))) == str(err)


def test_impossible_plans_are_infeasible_not_errors():
    r = perfsim.estimate(model="llama2-70b", hardware="a100-80gb", tp=1)
    assert r["feasible"] is False and "does not fit" in r["reason"]
    r = perfsim.estimate(model="llama2-7b", hardware="a100-80gb", tp=3)
    assert r["feasible"] is False and "heads" in r["reason"]
    r = perfsim.estimate(model="llama2-7b", hardware="a100-80gb", tp=2, num_devices=3)
    assert r["feasible"] is False
    r = perfsim.estimate(model="llama2-7b", hardware="t4", dtype="fp8")
    assert r["feasible"] is False and "dtype" in r["reason"]


def test_hf_config_json(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text('{"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, '
                   '"num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 128256, '
                   '"hidden_act": "silu", "tie_word_embeddings": true, "torch_dtype": "bfloat16"}')
    r = perfsim.estimate(model=str(cfg), hardware="a100-80gb")
    assert r["feasible"] and 1.2e9 < r["parameters"] < 1.3e9  # Llama-3.2-1B shape: 1.24B
    cfg.write_text("{not json")
    with pytest.raises(perfsim.InputError, match="malformed JSON"):
        perfsim.estimate(model=str(cfg), hardware="a100-80gb")


def test_bad_pim_mode_and_row_buffers_are_rejected():
    pim = "internal_bandwidth_gb_s: 1000, capacity_gib: 10, "
    with pytest.raises(perfsim.InputError, match="did you mean 'concurrent'"):
        tiny_spec(kind="npu", compute="fp16: 100", power="tdp_w: 100", pim=pim + "mode: concurent")
    with pytest.raises(perfsim.InputError, match="row_buffers"):
        tiny_spec(kind="npu", compute="fp16: 100", power="tdp_w: 100", pim=pim + "mode: concurrent, row_buffers: 1")
