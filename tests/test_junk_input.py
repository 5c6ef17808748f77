"""Junk for every argument: each call returns a result or raises InputError, never anything else;
on the command line it exits 0, 2 or 3 and never prints a traceback."""

import math

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import perfsim
from perfsim.cli import cli
from perfsim.errors import InputError
from perfsim.plan.arguments import ARGUMENT_TABLE

SMALL = {"model": "llama3.2-1b", "hardware": "a100-80gb"}
JUNK_SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

#: values no argument takes
JUNK = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 10**400, -(10**400), 2**64, 1e308, -1, 0, None, "", "x" * 10_000,
                     "a\0b", "../../etc/passwd", "nan", "inf", "1e400", True, False, b"bytes", (), [], {}, object(),
                     [None], [math.nan], {"base": None}, {"base": "a100-80gb", "tdp_w": math.nan}]),
    st.text(max_size=12), st.floats(), st.integers(min_value=-(2**70), max_value=2**70),
    st.lists(st.one_of(st.integers(-3, 9), st.floats(), st.none(), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(max_size=6), st.one_of(st.integers(-3, 9), st.floats(), st.none()), max_size=3),
)

#: values an argument takes, so that junk in one argument meets valid values in the others
VALID = {
    "int": st.sampled_from([1, 2, 4, 8, 16]), "pos": st.sampled_from([0.5, 1.25, 300.0, 1e12]),
    "pue": st.sampled_from([1.0, 1.3]), "frac": st.sampled_from([0.5, 0.9, 1.0]), "share": st.sampled_from([0, 0.5]),
    "bool": st.booleans(), "dtype": st.sampled_from(["bf16", "fp8", "int4", "fp32"]),
    "offload": st.sampled_from(["none", "cpu", "nvme", "gpu=0.5,cpu=0.5"]),
    "place": st.sampled_from([{}, {"decode_attention": "pim"}]), "layers": st.sampled_from([[8, 8], [16]]),
    "runtime": st.sampled_from(["vllm", "megatron", {"base": "vllm", "tp_overlap": 0.5}]),
    "model": st.sampled_from(["llama3.2-1b", "mixtral-8x7b", "qwen3-30b-a3b"]),
    "hardware": st.sampled_from(["a100-80gb", "h100-sxm", "t4", {"base": "h100-sxm", "hbm_bandwidth_gb_s": 5000}]),
}


def _valid(kind):
    return st.sampled_from(list(kind)) if isinstance(kind, tuple) else VALID[kind]


ARGUMENTS = {a.name: st.one_of(JUNK, _valid(a.kind)) for a in ARGUMENT_TABLE}
PLANS = st.dictionaries(st.sampled_from(sorted(ARGUMENTS)), st.none(), min_size=1, max_size=4).flatmap(
    lambda names: st.fixed_dictionaries({name: ARGUMENTS[name] for name in names}))


def _answers(call, **kwargs):
    """``call(**kwargs)`` returns a dict or a DataFrame, or raises InputError."""
    try:
        result = call(**kwargs)
    except InputError as exc:
        assert str(exc) and "\n" not in str(exc) and len(str(exc)) < 2000, str(exc)
        return None
    assert result is not None
    return result


@settings(max_examples=900, **JUNK_SETTINGS)
@given(plan=PLANS)
def test_estimate_answers_junk_for_any_argument_with_a_result_or_an_input_error(plan):
    result = _answers(perfsim.estimate, **{**SMALL, **plan})
    if result is not None:
        assert isinstance(result, dict) and isinstance(result["feasible"], bool)


@settings(max_examples=700, **JUNK_SETTINGS)
@given(plan=PLANS)
def test_training_estimate_answers_junk_with_a_result_or_an_input_error(plan):
    result = _answers(perfsim.estimate, **{**SMALL, "mode": "train", **plan})
    if result is not None:
        assert isinstance(result["feasible"], bool)


@settings(max_examples=250, **JUNK_SETTINGS)
@given(call=st.sampled_from(["gemm", "collective", "memcpy", "timeline"]), values=st.lists(JUNK, min_size=4,
                                                                                          max_size=4))
def test_other_functions_answer_junk_with_a_result_or_an_input_error(call, values):
    a, b, c, d = values
    calls = {"gemm": lambda: perfsim.gemm(a, 64, b, 64, dtype=c), "collective": lambda: perfsim.collective(
        "h100-sxm", a, b, 8, algorithm=c), "memcpy": lambda: perfsim.memcpy(a, b, c, d),
        "timeline": lambda: perfsim.timeline(**SMALL, tp=a, pp=b, schedule=c, stages=d)}
    _answers(calls[call])


SERVE_OPTIONS = {name: st.one_of(JUNK, valid) for name, valid in {
    "num_requests": st.sampled_from([1, 5]), "arrival_rate": st.sampled_from([1.0, 50.0]),
    "prompt_len": st.sampled_from([16, {"dist": "lognormal", "mean": 64, "sigma": 0.5, "max": 256}]),
    "gen_len": st.sampled_from([4, 8]), "scheduler": st.sampled_from(["static", "continuous", "chunked-prefill"]),
    "max_batch": st.sampled_from([1, 8]), "chunk_size": st.sampled_from([64]), "seed": st.sampled_from([0, 3]),
    "disaggregate": st.sampled_from(["1:1", "2:2"]), "ttft_slo_s": st.sampled_from([0.1]),
    "power_trace": st.booleans(), "max_requests": st.sampled_from([1, 10]), "trace": st.sampled_from(["none.csv"]),
    "tp": st.sampled_from([1, 2]), "dtype": st.sampled_from(["bf16", "fp8"]), "batch": st.sampled_from([4]),
}.items()}


@settings(max_examples=250, **JUNK_SETTINGS)
@given(options=st.dictionaries(st.sampled_from(sorted(SERVE_OPTIONS)), st.none(), min_size=1, max_size=3).flatmap(
    lambda names: st.fixed_dictionaries({name: SERVE_OPTIONS[name] for name in names})))
def test_serve_answers_junk_with_a_result_or_an_input_error(options):
    if isinstance(options.get("num_requests"), int) and not isinstance(options["num_requests"], bool):
        options["num_requests"] = min(options["num_requests"], 5)  # a valid count, kept small
    result = _answers(perfsim.serve, **{**SMALL, "num_requests": 5, "prompt_len": 32, "gen_len": 4, **options})
    if result is not None:
        assert isinstance(result["feasible"], bool)


@settings(max_examples=250, **JUNK_SETTINGS)
@given(plan=PLANS, axis=st.sampled_from(sorted(ARGUMENTS)), values=st.lists(st.one_of(JUNK, st.just(2)), max_size=3),
       chunk_rows=st.one_of(st.none(), JUNK), max_rows=st.one_of(st.none(), JUNK))
def test_sweep_answers_junk_with_a_table_or_an_input_error(plan, axis, values, chunk_rows, max_rows):
    result = _answers(perfsim.sweep, **{**SMALL, **plan, axis: values, "chunk_rows": chunk_rows,
                                        "max_rows": max_rows})
    if result is not None:
        assert len(result) >= 0


CLI_JUNK = st.one_of(st.sampled_from(["nan", ".nan", "inf", "-.inf", "1e400", "1" + "0" * 400, "-1", "0", "",
                                      "x" * 5000, "{a: 1}", "[1, 2]", "null", "~", "true", "{base: a100-80gb}",
                                      "1.5", "a\0b", "../x.yaml", "%s", "8"]),
                     st.text(max_size=10))
CLI_OPTIONS = ["--model", "--hardware", "--tp", "--pp", "--dp", "--batch", "--prompt-len", "--gen-len", "--mode",
               "--dtype", "--kv-dtype", "--pue", "--power-cap-w", "--gpu-memory-utilization", "--offload-kv",
               "--place", "--set", "--recompute", "--schedule", "--seq-len", "--global-batch", "--runtime"]


@settings(max_examples=200, **JUNK_SETTINGS)
@given(command=st.sampled_from(["estimate", "serve"]),
       options=st.lists(st.tuples(st.sampled_from(CLI_OPTIONS), CLI_JUNK), min_size=1, max_size=3))
def test_cli_answers_junk_with_exit_0_2_or_3_and_no_traceback(command, options):
    argv = [command, "--model", "llama3.2-1b", "--hardware", "a100-80gb"]
    if command == "serve":
        argv += ["--num-requests", "3", "--prompt-len", "32", "--gen-len", "4"]
    for option, value in options:
        argv += [option, value]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code in (0, 2, 3), (argv, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), (argv, result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert result.output.count("\n") <= 4 and "rror" in result.output, result.output
