"""Zoo models added from Hugging Face configs, and Hugging Face repo ids as model names.

The published-size check of every zoo file (1 %, or half the rounding step of a rounded size)
lives in tests/test_zoo.py, which is parametrised over the whole zoo; here each new model is
held to the looser 3 % of its ``published_params`` (and ``published_active_params``) so that
a model whose published total also counts parts perfsim does not model (Llama 4's vision
encoder) is still checked.
"""

import math

import pytest
import yaml

import perfsim
from perfsim.errors import InputError
from perfsim.graph.params import total_params
from perfsim.specs.model import hf_repo_ids, load_model, model_names
from perfsim.specs.paths import data_dir

NEW_MODELS = ["llama3.1-70b", "llama3.2-1b", "llama3.2-3b", "llama3.3-70b", "llama4-scout", "llama4-maverick",
              "qwen2.5-7b", "qwen2.5-72b", "qwen3-8b", "qwen3-32b", "qwen3-30b-a3b", "qwen3-235b-a22b",
              "gemma2-9b", "gemma2-27b", "gemma3-12b", "gemma3-27b", "mixtral-8x22b", "gpt-oss-20b",
              "gpt-oss-120b", "deepseek-v2-lite"]
MOE = {"llama4-scout", "llama4-maverick", "qwen3-30b-a3b", "qwen3-235b-a22b", "mixtral-8x22b", "gpt-oss-20b",
       "gpt-oss-120b", "deepseek-v2-lite"}
# published "active" counts that leave out the input embedding (perfsim counts it): checked loosely
ACTIVE_WITHOUT_EMBEDDING = {"gpt-oss-20b", "gpt-oss-120b", "deepseek-v2-lite"}


def _raw(name):
    return yaml.safe_load((data_dir("workloads") / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", NEW_MODELS)
def test_new_model_loads_with_sources(name):
    assert name in model_names()
    model = load_model(name)
    raw = _raw(name)
    assert model.name == name == raw["name"]
    assert "config.json" in raw["source"] and raw["description"]
    assert raw["hf_ids"], "every new model names its Hugging Face repos"
    assert model.is_moe == (name in MOE)
    c = model.columns()
    assert c["heads"] % c["kv_heads"] == 0 and c["head_dim"] > 0


@pytest.mark.parametrize("name", NEW_MODELS)
def test_new_model_parameter_count_near_published(name):
    model = load_model(name)
    if not model.published_params:
        pytest.skip(f"{name}: no published parameter count")
    counted = float(total_params(model.columns()))
    assert counted == pytest.approx(model.published_params, rel=0.03)
    if model.published_active_params:
        active = float(total_params(model.columns(), active=True))
        rel = 0.25 if name in ACTIVE_WITHOUT_EMBEDDING else 0.03
        assert active == pytest.approx(model.published_active_params, rel=rel)
        assert active < counted


def test_moe_layouts_follow_the_configs():
    maverick = load_model("llama4-maverick").columns()
    layout = (maverick["experts"], maverick["top_k"], maverick["shared_experts"], maverick["dense_layers"])
    assert layout == (128, 1, 1, 24)
    lite = load_model("deepseek-v2-lite").columns()
    assert (lite["q_lora"], lite["kv_lora"], lite["shared_experts"], lite["dense_layers"]) == (0, 512, 2, 1)
    assert lite["head_dim"] == 192  # qk_nope_head_dim + qk_rope_head_dim
    qwen = load_model("qwen3-30b-a3b").columns()
    assert (qwen["experts"], qwen["top_k"], qwen["moe_ffn"], qwen["head_dim"]) == (128, 8, 768, 128)


def test_every_zoo_repo_id_resolves_to_its_entry():
    index = hf_repo_ids()
    assert len(index) >= 2 * len(NEW_MODELS)
    for key, (repo, name) in index.items():
        assert key == repo.lower()
        assert repo in _raw(name)["hf_ids"]
        assert load_model(repo).name == name
        assert load_model(repo.upper()).name == name  # case-insensitive


@pytest.mark.parametrize("repo, name", [("meta-llama/Llama-3.3-70B-Instruct", "llama3.3-70b"),
                                        ("Qwen/Qwen3-30B-A3B", "qwen3-30b-a3b"),
                                        ("openai/gpt-oss-120b", "gpt-oss-120b"),
                                        ("meta-llama/Llama-2-7b-hf", "llama2-7b"),
                                        ("deepseek-ai/DeepSeek-V3", "deepseek-v3")])
def test_repo_id_names_the_zoo_entry(repo, name):
    assert load_model(repo) is load_model(name)


def test_estimate_by_repo_id_equals_estimate_by_zoo_name():
    by_repo = perfsim.estimate(model="meta-llama/Llama-3.3-70B-Instruct", hardware="h100-sxm", tp=8)
    by_name = perfsim.estimate(model="llama3.3-70b", hardware="h100-sxm", tp=8)
    assert by_repo["feasible"]
    # the plan echoes the model argument as given; everything else is the same
    assert by_repo["plan"].pop("model") == "meta-llama/Llama-3.3-70B-Instruct"
    assert by_name["plan"].pop("model") == "llama3.3-70b"
    assert _same(by_repo, by_name)


def _same(a, b):
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


@pytest.mark.parametrize("repo", ["meta-llama/Llama-3.3-70B", "nobody/no-such-model"])
def test_unknown_repo_id_is_an_input_error(repo):
    with pytest.raises(InputError) as err:
        load_model(repo)
    assert "unknown model" in str(err.value)
    with pytest.raises(InputError):
        perfsim.estimate(model=repo, hardware="h100-sxm")


def test_unknown_repo_id_suggests_close_repo_ids():
    with pytest.raises(InputError) as err:
        load_model("meta-llama/Llama-3.3-70B")
    assert err.value.suggestions and all("/" in s for s in err.value.suggestions)
    with pytest.raises(InputError) as err:
        load_model("qwen3-30b")
    assert "qwen3-30b-a3b" in err.value.suggestions


def test_hf_ids_are_validated(tmp_path):
    from perfsim.specs import model as model_module

    shape = "hidden_size: 8\nnum_hidden_layers: 1\nnum_attention_heads: 1\nvocab_size: 8\n"
    good = tmp_path / "a.yaml"
    good.write_text("name: a\nhf_ids: [Org/A]\n" + shape)
    clash = tmp_path / "b.yaml"
    clash.write_text("name: b\nhf_ids:\n  - org/a\n" + shape)  # a block list, same id in another case
    index = model_module.hf_repo_ids({"a": good})
    assert dict(index) == {"org/a": ("Org/A", "a")}
    with pytest.raises(InputError, match="also listed"):
        model_module.hf_repo_ids({"a": good, "b": clash})
    bad = tmp_path / "c.yaml"
    bad.write_text("name: c\nhf_ids: [not-a-repo-id]\n")
    with pytest.raises(InputError, match="repo ids"):
        model_module.hf_repo_ids({"c": bad})
