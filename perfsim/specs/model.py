"""Model specs: zoo YAML, Hugging Face ``config.json`` files, or dicts with Hugging Face keys.

Everything is normalised to Llama-style Hugging Face names; :meth:`ModelSpec.columns` gives the
numbers the op graph reads (one value per configuration row once gathered into a sweep).
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import yaml

from perfsim.errors import InputError, check_whole, finite, unknown
from perfsim.specs.memo import Memo, Unkeyable, frozen
from perfsim.specs.paths import read_once, read_text, zoo
from perfsim.specs.yamlio import LineDict, load_yaml

# other projects' names for the same thing -> the Llama-style Hugging Face name
_ALIASES = {
    "n_embd": "hidden_size", "d_model": "hidden_size", "n_embed": "hidden_size", "dim": "hidden_size",
    "n_layer": "num_hidden_layers", "num_layers": "num_hidden_layers", "n_layers": "num_hidden_layers",
    "n_head": "num_attention_heads", "n_heads": "num_attention_heads", "num_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads", "n_kv_heads": "num_key_value_heads",
    "ffn_dim": "intermediate_size", "n_inner": "intermediate_size", "d_ff": "intermediate_size",
    "ffn_hidden_size": "intermediate_size",
    "n_routed_experts": "num_local_experts", "num_experts": "num_local_experts",
    "moe_topk": "num_experts_per_tok", "activation_function": "hidden_act",
    "n_positions": "max_position_embeddings", "max_seq_len": "max_position_embeddings",
    "seq_length": "max_position_embeddings",
}

_INTS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
    "intermediate_size", "vocab_size", "max_position_embeddings", "num_local_experts", "num_experts_per_tok",
    "moe_intermediate_size", "n_shared_experts", "first_k_dense_replace", "q_lora_rank", "kv_lora_rank",
    "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "learned_position_rows", "expansion_ratio",
)
_BOOLS = ("tie_word_embeddings", "use_bias", "attention_bias", "mlp_bias", "lm_head_bias",
          "parallel_attn_mlp", "embedding_norm", "gated_mlp", "multi_query")
_STRS = ("name", "description", "source", "hidden_act", "position_embedding", "norm", "model_type")
_INFO = ("published_params", "published_active_params", "architectures", "torch_dtype", "transformers_version")
_GATED_ACTS = ("silu", "swish", "swiglu", "geglu", "gelu_glu", "silu_glu")
_PLAIN_ACTS = ("gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "relu", "quick_gelu", "gelu_approx")
_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
#: Hugging Face ``model_type`` values an engine profile may treat apart (a runtime's ``*_for`` keys);
#: any other type, or none, takes the profile's general figure
MODEL_TYPES = ("bloom", "llama", "opt")


@dataclass(frozen=True)
class ModelSpec:
    """A transformer, normalised. ``fields`` holds the Llama-style Hugging Face keys."""

    name: str
    fields: MappingProxyType
    published_params: float | None = None
    published_active_params: float | None = None

    def __getitem__(self, key):
        return self.fields[key]

    @property
    def is_moe(self) -> bool:
        return self.fields["num_local_experts"] > 0

    def columns(self) -> dict[str, float]:
        """Numbers the op graph reads (see :mod:`perfsim.graph.transformer`)."""
        f = self.fields
        return {
            "hidden": f["hidden_size"], "layers": f["num_hidden_layers"], "heads": f["num_attention_heads"],
            "kv_heads": f["num_key_value_heads"], "head_dim": f["head_dim"], "ffn": f["intermediate_size"],
            "vocab": f["vocab_size"], "gated": float(f["gated_mlp"]), "tied": float(f["tie_word_embeddings"]),
            "pos_rows": f["learned_position_rows"], "attn_bias": float(f["attention_bias"]),
            "mlp_bias": float(f["mlp_bias"]), "head_bias": float(f["lm_head_bias"]),
            "norm_params": 2.0 if f["norm"] == "layernorm" else 1.0,
            "parallel_block": float(f["parallel_attn_mlp"]), "embed_norm": float(f["embedding_norm"]),
            "experts": f["num_local_experts"], "top_k": f["num_experts_per_tok"],
            "moe_ffn": f["moe_intermediate_size"], "shared_experts": f["n_shared_experts"],
            "dense_layers": f["first_k_dense_replace"] if f["num_local_experts"] else f["num_hidden_layers"],
            "q_lora": f["q_lora_rank"], "kv_lora": f["kv_lora_rank"], "qk_nope": f["qk_nope_head_dim"],
            "qk_rope": f["qk_rope_head_dim"], "v_head_dim": f["v_head_dim"],
            "fp8_block": float(f.get("fp8_block_scales", False)),
            # 1 + the index of the Hugging Face model_type in MODEL_TYPES (0: another or none)
            "model_type": float(MODEL_TYPES.index(f["model_type"]) + 1 if f.get("model_type") in MODEL_TYPES else 0),
        }


def model_names() -> list[str]:
    """Names of the shipped models (``perfsim list models``)."""
    return sorted(zoo("workloads"))


#: models given as dicts, parsed once per distinct dict (a spec is frozen; a dict that fails to parse is
#: not kept, so it fails again the next time)
_DICT_MODELS = Memo(256)


def load_model(ref, field: str = "model") -> ModelSpec:
    """Resolve a zoo name, a YAML path, a Hugging Face ``config.json`` path, a Hugging Face repo id
    listed in a zoo file's ``hf_ids`` (case-insensitive, e.g. ``meta-llama/Llama-3.3-70B-Instruct``
    -> ``llama3.3-70b``), or a dict."""
    if isinstance(ref, ModelSpec):
        return ref
    if isinstance(ref, dict):
        try:
            key = frozen(ref)
        except Unkeyable:
            return parse_model(ref, name=str(ref.get("name", "custom")), field=field)
        hit = _DICT_MODELS.get(key)
        return hit if hit is not None else _DICT_MODELS.put(key, parse_model(ref, name=str(ref.get("name", "custom")),
                                                                              field=field))
    if not isinstance(ref, (str, Path)):
        raise InputError(f"expected a model name, file or dict, got {type(ref).__name__}", field=field)
    return read_once("model", _find_model, ref, field)


def _find_model(ref, field: str) -> ModelSpec:
    """:func:`load_model` of a name, a path or a Hugging Face repo id."""
    names = zoo("workloads")
    if str(ref) in names:
        return _load_file(str(names[str(ref)]), field, _mtime(names[str(ref)]))
    if Path(str(ref)).suffix in (".yaml", ".yml", ".json") or os.path.isfile(str(ref)):
        return _load_file(str(ref), field, _mtime(ref))
    index = hf_repo_ids(names)
    hit = index.get(str(ref).strip().lower())
    if hit is not None and hit[1] in names:
        return _load_file(str(names[hit[1]]), field, _mtime(names[hit[1]]))
    choices = list(names) + ([repo for repo, _ in index.values()] if "/" in str(ref) else [])
    raise unknown("model", ref, choices, field=field)


def hf_repo_ids(names: dict | None = None) -> MappingProxyType:
    """Hugging Face repo ids of the zoo models: lower-cased id -> ``(id as written, zoo name)``.

    Read from the ``hf_ids`` list of each zoo file; the index is built once per set of zoo files
    (names, paths, modification times) and cached.
    """
    names = zoo("workloads") if names is None else names
    return _hf_index(tuple((name, str(path), _mtime(path)) for name, path in sorted(names.items())))


_HF_IDS_KEY = re.compile(r"^hf_ids[ \t]*:.*(?:\n(?:[ \t]+|-).*)*", re.MULTILINE)


@functools.lru_cache(maxsize=8)
def _hf_index(files: tuple) -> MappingProxyType:
    index: dict = {}
    for name, path, _ in files:
        # only the top-level ``hf_ids`` entry is parsed: a full YAML load of every zoo file is slower
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot read file: {exc.strerror or exc}", file=path, field="model") from None
        match = _HF_IDS_KEY.search(text)
        if match is None:
            continue
        where = {"file": path, "line": text.count("\n", 0, match.start()) + 1}
        try:
            repos = yaml.safe_load(match.group(0)).get("hf_ids") or []
        except yaml.YAMLError:
            raise InputError("malformed hf_ids entry", field="model.hf_ids", **where) from None
        if isinstance(repos, str):
            repos = [repos]
        if not isinstance(repos, list) or not all(isinstance(r, str) and r.strip().count("/") == 1 for r in repos):
            raise InputError("expected a list of Hugging Face repo ids ('owner/name')", field="model.hf_ids", **where)
        for repo in repos:
            key = repo.strip().lower()
            if key in index and index[key][1] != name:
                raise InputError(f"Hugging Face repo id {repo!r} is also listed by zoo model {index[key][1]!r}",
                                 field="model.hf_ids", **where)
            index[key] = (repo.strip(), name)
    return MappingProxyType(index)


def _mtime(path) -> float:
    try:
        return os.stat(path).st_mtime_ns
    except (OSError, ValueError):  # missing, or a name the OS refuses: reading it says which
        return 0.0


@functools.lru_cache(maxsize=256)
def _load_file(path: str, field: str, mtime: float) -> ModelSpec:
    if path.endswith(".json"):
        text = read_text(path, field)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"malformed JSON: {exc.msg}", file=path, line=exc.lineno, field=field) from None
        except ValueError as exc:  # an integer of more digits than Python converts
            raise InputError(f"malformed JSON: {exc}", file=path, field=field) from None
        except RecursionError:
            raise InputError("malformed JSON: nested too deeply", file=path, field=field) from None
    else:
        data = load_yaml(path, field)
    if not isinstance(data, dict):
        raise InputError("expected a mapping of model keys", file=path, field=field)
    return parse_model(data, name=str(data.get("name", Path(path).stem)), field=field, file=path)


def _num(value) -> float | None:
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, str):  # YAML 1.1 reads 68.98e9 as a string
        try:
            value = float(value)
        except ValueError:
            return None
    return finite(value)


def _fp8_block_scales(q, field, where) -> bool:
    """Whether a Hugging Face ``quantization_config`` describes fp8 weights with block scales
    (``quant_method: fp8`` and a ``weight_block_size`` such as DeepSeek-V3's ``[128, 128]``)."""
    if not isinstance(q, dict):
        raise InputError(f"expected a mapping, got {q!r}", field=field, **where)
    block = q.get("weight_block_size")
    if block is None:
        return False
    if not (isinstance(block, list | tuple) and block
            and all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)):
        raise InputError(f"expected a list of positive whole numbers, got {block!r}",
                         field=f"{field}.weight_block_size", **where)
    return q.get("quant_method") == "fp8"


def parse_model(data: dict, *, name: str = "custom", field: str = "model", file: str | None = None) -> ModelSpec:
    """Normalise a mapping of Hugging Face config keys into a :class:`ModelSpec`.

    Keys that are not about the shape (``torch_dtype``, ``rope_theta``, …) are ignored, as
    Hugging Face configs carry many; a shape key with a wrong type or range is an error.
    """

    def where(key):
        if isinstance(data, LineDict):
            return {"file": data.file, "line": data.lines.get(key, data.line)}
        return {"file": file}

    raw = {}
    for key, value in data.items():
        canonical = _ALIASES.get(key, key)
        if canonical in raw and key != canonical:
            continue  # the canonical key wins over an alias
        raw[canonical] = (key, value)
    f: dict = {}
    for key in _INTS:
        if key in raw:
            orig, value = raw[key]
            if value is None:
                continue
            f[key] = check_whole(value, f"{field}.{orig}", 0, **where(orig))
    for key in _BOOLS:
        if key in raw:
            orig, value = raw[key]
            if not isinstance(value, bool):
                raise InputError(f"expected true or false, got {value!r}", field=f"{field}.{orig}", **where(orig))
            f[key] = value
    for key in _STRS:
        if key in raw and raw[key][1] is not None:
            f[key] = str(raw[key][1])
    if raw.get("quantization_config", (None, None))[1] is not None:
        f["fp8_block_scales"] = _fp8_block_scales(raw["quantization_config"][1], f"{field}.quantization_config",
                                                  where("quantization_config"))
    for key in _REQUIRED:
        if key not in f:
            raise InputError("required model key is missing", field=f"{field}.{key}", file=getattr(data, "file", file))
        if f[key] <= 0:
            raise InputError("must be positive", field=f"{field}.{key}", **where(key))
    h, heads = f["hidden_size"], f["num_attention_heads"]
    if f.get("multi_query"):
        f.setdefault("num_key_value_heads", 1)
    f.setdefault("num_key_value_heads", heads)
    if f["num_key_value_heads"] <= 0 or heads % f["num_key_value_heads"]:
        raise InputError(
            f"num_key_value_heads ({f['num_key_value_heads']}) must divide num_attention_heads ({heads})",
            field=f"{field}.num_key_value_heads", **where("num_key_value_heads"))
    if "head_dim" not in f or f["head_dim"] == 0:
        f["head_dim"] = h // heads
    if "intermediate_size" not in f:
        f["intermediate_size"] = f.pop("expansion_ratio", 4) * h
    act = f.get("hidden_act", "gelu").lower()
    if "gated_mlp" not in f:
        if act in _GATED_ACTS:
            f["gated_mlp"] = True
        elif act in _PLAIN_ACTS:
            f["gated_mlp"] = False
        else:
            raise unknown("hidden_act", act, _GATED_ACTS + _PLAIN_ACTS, field=f"{field}.hidden_act",
                          **where("hidden_act"))
    f.setdefault("tie_word_embeddings", False)
    bias = f.get("use_bias", False)
    for key in ("attention_bias", "mlp_bias", "lm_head_bias"):
        f.setdefault(key, bias if key != "lm_head_bias" else False)
    f.setdefault("position_embedding", "rope")
    if f["position_embedding"] not in ("rope", "alibi", "learned"):
        raise unknown("position_embedding", f["position_embedding"], ("rope", "alibi", "learned"),
                      field=f"{field}.position_embedding", **where("position_embedding"))
    if f["position_embedding"] == "learned":
        f.setdefault("learned_position_rows", f.get("max_position_embeddings", 2048))
    f.setdefault("learned_position_rows", 0)
    f.setdefault("norm", "rmsnorm" if f["gated_mlp"] else "layernorm")
    if f["norm"] not in ("rmsnorm", "layernorm"):
        raise unknown("norm", f["norm"], ("rmsnorm", "layernorm"), field=f"{field}.norm", **where("norm"))
    f.setdefault("parallel_attn_mlp", False)
    f.setdefault("embedding_norm", False)
    for key in ("num_local_experts", "num_experts_per_tok", "n_shared_experts", "first_k_dense_replace",
                "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                "max_position_embeddings"):
        f.setdefault(key, 0)
    if f["num_local_experts"]:
        if not 0 < f["num_experts_per_tok"] <= f["num_local_experts"]:
            raise InputError("num_experts_per_tok must be between 1 and num_local_experts",
                             field=f"{field}.num_experts_per_tok", **where("num_experts_per_tok"))
        f.setdefault("moe_intermediate_size", f["intermediate_size"])
    else:
        f["num_experts_per_tok"] = 0
        f["n_shared_experts"] = 0
    f.setdefault("moe_intermediate_size", 0)
    if f["kv_lora_rank"]:
        for key in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            if not f[key]:
                raise InputError("MLA (kv_lora_rank > 0) needs this key", field=f"{field}.{key}",
                                 file=getattr(data, "file", file))
        f["head_dim"] = f["qk_nope_head_dim"] + f["qk_rope_head_dim"]
    f["num_local_experts"] = f["num_local_experts"]
    return ModelSpec(
        name=name, fields=MappingProxyType(f),
        published_params=_num(data.get("published_params")),
        published_active_params=_num(data.get("published_active_params")),
    )
