"""The validation cases: the project's copy matches the published set, and every case runs to a
number or a stated reason — never a traceback."""

import filecmp
import os
from pathlib import Path

import pytest

import perfsim
from perfsim.validate import load_cases, run_case

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PERFSIM_SHARED_VALIDATION", ROOT.parent / "shared" / "validation"))
CATEGORIES = {"training", "inference", "memory", "microbenchmark", "power", "offload", "heterogeneous"}


@pytest.mark.skipif(not SHARED.is_dir(), reason="no shared validation set next to this checkout")
def test_project_copy_is_in_step_with_the_shared_set():
    shared = sorted(p.relative_to(SHARED) for p in SHARED.rglob("*") if p.is_file())
    assert shared, "shared validation set is empty"
    stale = [str(p) for p in shared if not (ROOT / "validation" / p).is_file()
             or not filecmp.cmp(SHARED / p, ROOT / "validation" / p, shallow=False)]
    assert not stale, f"validation/ differs from {SHARED}: {stale}"


def test_cases_are_well_formed():
    cases = load_cases()
    assert len(cases) >= 200
    ids = [c["id"] for c in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    for c in cases:
        assert c["category"] in CATEGORIES, c["id"]
        assert c.get("source") and c.get("metric") and "value" in c, c["id"]
        assert c["call"] in ("estimate", "serve", "gemm", "collective", "memcpy"), c["id"]


def test_every_case_gives_a_number_or_a_reason():
    df = perfsim.validate()
    assert (df["status"] != "error").all(), df[df["status"] == "error"][["id", "reason"]].to_string()
    failed = df[df["predicted"].isna()]
    assert failed["reason"].notna().all()
    # the memory and microbenchmark cases all run
    for category in ("memory", "microbenchmark"):
        assert df[df["category"] == category]["predicted"].notna().all(), category


def test_ratio_case_divides_by_the_baseline_run():
    case = {"id": "R-TEST", "category": "inference", "call": "estimate", "metric": "tpot_s", "value": 2.0,
            "args": {"model": "llama2-7b", "hardware": {"base": "a100-80gb", "hbm_bandwidth_gb_s": 1000},
                     "batch": 1, "prompt_len": 128, "gen_len": 64},
            "baseline": {"hardware": {"base": "a100-80gb", "hbm_bandwidth_gb_s": 2000}}}
    row = run_case(case)
    assert row["status"] == "ok" and row["ratio"]
    slow = perfsim.estimate(**case["args"])["tpot_s"]
    fast = perfsim.estimate(**{**case["args"], **case["baseline"]})["tpot_s"]
    assert row["predicted"] == pytest.approx(slow / fast)
    assert 1.5 < row["predicted"] < 2.0  # decode is mostly weight streaming


def test_broken_case_is_reported_not_raised():
    row = run_case({"id": "X", "category": "training", "call": "estimate", "metric": "step_time_s", "value": 1.0,
                    "args": {"model": "no-such-model", "hardware": "a100-80gb"}})
    assert row["status"] == "cannot run" and "no-such-model" in row["reason"]
    row = run_case({"id": "Y", "category": "inference", "call": "teleport", "metric": "x", "value": 1.0})
    assert row["status"] == "cannot run"


def test_validate_filters_and_summarises_by_source():
    from click.testing import CliRunner

    from perfsim.cli import cli

    out = CliRunner().invoke(cli, ["validate", "--source", "T-MAXTEXT", "--format", "markdown"])
    assert out.exit_code == 0, out.output
    assert "| category | source |" in out.output and "| training | T-MAXTEXT | 5 |" in out.output
    assert " %" in out.output  # MAPE in per cent, as the README shows it
    table = CliRunner().invoke(cli, ["validate", "--category", "memory", "--source", "M-VLLM"])
    assert table.output.startswith("case") and "MAPE per source" in table.output
