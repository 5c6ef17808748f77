"""The plan's arguments: one table of name, kind, default, unit and meaning, and the enums that
code the choices as integers in the columns.

``estimate``, ``sweep``, ``serve`` and the CLI read this table; docs/reference.md is the user's view of it.
Kinds: ``int`` (whole number >= 1), ``pos`` (finite number > 0), ``frac`` (in (0, 1]), ``share``
(in [0, 1]), ``pue`` (>= 1), ``bool``, a tuple of choices, or a name resolved by its loader
(``model``, ``hardware``, ``runtime``, ``dtype``, ``offload``, ``place``), or ``layers`` (a list of
layer counts per pipeline stage: one value, a list of such lists an axis).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from perfsim.errors import InputError, check_whole, finite, shown, unknown
from perfsim.plan.offload import canonical
from perfsim.specs.dtypes import check_dtype
from perfsim.specs.hardware import split_whatif
from perfsim.specs.model import load_model
from perfsim.specs.place import check_place
from perfsim.specs.runtime import load_runtime


class _Choice(IntEnum):
    """A choice coded as an integer column; ``label`` is the name users write."""

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")

    @classmethod
    def labels(cls) -> tuple:
        return tuple(member.label for member in cls)

    @classmethod
    def of(cls, label: str) -> _Choice:
        return cls[label.upper().replace("-", "_")]


class Mode(_Choice):
    INFERENCE = 0
    TRAIN = 1


class Recompute(_Choice):
    NONE = 0
    SELECTIVE = 1
    FULL = 2
    AUTO = 3  # the least of the others that fits, resolved per row (perfsim.analytical.evaluate)


class Schedule(_Choice):
    GPIPE = 0
    ONE_F_ONE_B = 1
    INTERLEAVED = 2
    ZERO_BUBBLE = 3
    DUALPIPE = 4

    @property
    def label(self) -> str:
        return "1f1b" if self is Schedule.ONE_F_ONE_B else super().label

    @classmethod
    def of(cls, label: str) -> Schedule:
        return cls.ONE_F_ONE_B if label == "1f1b" else super().of(label)


class Finetune(_Choice):
    FULL = 0
    LORA = 1


MODES = Mode.labels()
RECOMPUTE = Recompute.labels()
SCHEDULES = Schedule.labels()
FINETUNE = Finetune.labels()


@dataclass(frozen=True)
class Argument:
    """One plan argument: ``kind`` (see the module's docstring), ``default`` (None: none, or derived
    from others as ``meaning`` says), ``unit`` of a number, ``meaning`` in one line."""

    name: str
    kind: object
    default: object
    unit: str
    meaning: str


ARGUMENT_TABLE = (
    Argument("model", "model", None, "", "zoo name, YAML or config.json path, or a dict of Hugging Face config keys"),
    Argument("hardware", "hardware", None, "", "zoo name, YAML path, or a what-if dict {base: NAME, KEY: value}"),
    Argument("num_devices", "int", None, "devices", "devices of the whole run (default tp x pp x dp x cp)"),
    Argument("mode", MODES, "inference", "", "inference (a request batch) or train (a training step)"),
    Argument("dtype", "dtype", "bf16", "", "compute type of the GEMMs"),
    Argument("weight_dtype", "dtype", None, "", "storage type of the weights when it differs from dtype"),
    Argument("kv_dtype", "dtype", None, "", "storage type of the KV cache when it differs from dtype"),
    Argument("tp", "int", 1, "devices", "tensor-parallel degree"),
    Argument("pp", "int", 1, "stages", "pipeline-parallel degree"),
    Argument("pp_layers", "layers", None, "layers",
             "layers of each pipeline stage, a list of pp counts summing to the layers (default: balanced)"),
    Argument("dp", "int", None, "replicas", "data-parallel degree (default num_devices / (tp x pp x cp))"),
    Argument("cp", "int", 1, "devices", "context-parallel degree"),
    Argument("ep", "int", 1, "devices", "expert-parallel degree, drawn from the tp x dp x cp ranks of a stage"),
    Argument("capacity_factor", "pos", None, "", "MoE expert buffer over the balanced share (default: dropless)"),
    Argument("sp", "bool", None, "", "sequence parallelism with TP (default: the engine's)"),
    Argument("attention_sharding", ("heads", "batch"), "heads", "",
             "decode attention and the KV cache split over the TP ranks by heads, or by sequences"),
    Argument("weight_layout", ("1d", "2d"), "1d", "",
             "weight matrices split over the TP ranks along one dimension, or 2D weight-stationary over an X x YZ grid"),
    Argument("zero", (0, 1, 2, 3), None, "", "ZeRO stage (3: FSDP full sharding; default: the engine's own)"),
    Argument("zero_shard_size", "int", None, "ranks", "ranks per sharding group (default all dp x cp ranks)"),
    Argument("schedule", SCHEDULES, "1f1b", "", "pipeline schedule"),
    Argument("virtual_stages", "int", 1, "chunks", "model chunks per device of the interleaved schedule"),
    Argument("recompute", RECOMPUTE, "auto", "",
             "activation recomputation; auto: the least that fits the device (none, selective, full)"),
    Argument("seq_len", "int", 2048, "tokens", "training: tokens per sequence"),
    Argument("global_batch", "int", None, "sequences", "training: sequences per step (default 8 x dp)"),
    Argument("micro_batch", "int", None, "sequences",
             "training: sequences per micro-batch (default 1); offloaded inference: the GPU batch of a block"),
    Argument("batch", "int", 1, "sequences", "inference: concurrent sequences of the whole system"),
    Argument("prompt_len", "int", 2048, "tokens", "inference: prompt tokens per sequence"),
    Argument("gen_len", "int", 256, "tokens", "inference: generated tokens per sequence"),
    Argument("runtime", "runtime", None, "", "software-stack profile (default: a current engine for the mode)"),
    Argument("gpu_memory_utilization", "frac", 0.9, "", "inference: share of device memory the engine may use"),
    Argument("power_cap_w", "pos", None, "W", "per-device power cap (default: none; a GPU stays within its tdp_w)"),
    Argument("pue", "pue", 1.0, "", "facility energy over IT energy"),
    Argument("wall_energy", ("devices", "node"), "devices", "",
             "energy_wall_j charges the devices' share of their servers' host power, or whole servers"),
    Argument("finetune", FINETUNE, "full", "", "full training or LoRA adapters on frozen weights"),
    Argument("lora_rank", "int", 16, "", "rank of the LoRA adapters"),
    Argument("train_tokens", "pos", None, "tokens", "tokens of the whole training job (default: one step)"),
    Argument("offload_weights", "offload", "none", "", "where the weights live: none, a tier, tier fractions, or auto (inference: the "
             "throughput-best placement that fits, searched as FlexGen's policy search does)"),
    Argument("offload_optimizer", "offload", "none", "", "where the optimizer states live"),
    Argument("offload_grads", "offload", "none", "", "where the gradients live"),
    Argument("offload_activations", "offload", "none", "", "where parked activations live (auto: searched, as offload_weights)"),
    Argument("offload_kv", "offload", "none", "", "where the KV cache lives (auto: searched, as offload_weights)"),
    Argument("offload_experts", "offload", None, "", "where MoE experts live (default: with the weights)"),
    Argument("expert_hit_rate", "share", None, "", "share of routed experts found on the device (default: its share)"),
    Argument("place", "place", None, "", "heterogeneous placement, e.g. {decode_attention: pim}"),
    Argument("pim_mode", ("concurrent", "blocked"), None, "", "PIM row buffers: overlap or take turns"),
    Argument("sub_batches", (1, 2), None, "", "NPU+PIM sub-batch interleaving"),
)

#: what an argument without a fixed default takes when it is not given (shown by ``--help``)
DERIVED_DEFAULTS = {
    "num_devices": "tp x pp x dp x cp", "weight_dtype": "dtype", "kv_dtype": "dtype",
    "dp": "num_devices / (tp x pp x cp), else 1", "capacity_factor": "dropless routing",
    "zero": "the engine's (megatron 1, torchtitan and maxtext 3, else 0)",
    "sp": "the engine's (megatron and nemo: on; else off)", "zero_shard_size": "all dp x cp ranks",
    "pp_layers": "a balanced split", "global_batch": "8 x dp", "micro_batch": "1 in training; the whole batch",
    "runtime": "a current engine for the mode and device", "power_cap_w": "the board limit (tdp_w) on GPUs",
    "train_tokens": "one step", "offload_experts": "with the weights", "expert_hit_rate": "the device's share",
    "place": "all on the main device", "pim_mode": "the PIM spec's", "sub_batches": "2 when concurrent, else 1",
}

#: arguments that mean something in one mode only -> (that mode, what the other mode takes instead)
MODE_ONLY = {
    "seq_len": ("train", "prompt_len and gen_len"), "global_batch": ("train", "batch"),
    "recompute": ("train", None), "schedule": ("train", None), "virtual_stages": ("train", None),
    "zero_shard_size": ("train", None), "finetune": ("train", None), "lora_rank": ("train", None),
    "train_tokens": ("train", None), "offload_optimizer": ("train", None), "offload_grads": ("train", None),
    "batch": ("inference", "global_batch and micro_batch"), "prompt_len": ("inference", "seq_len"),
    "gen_len": ("inference", "seq_len"), "gpu_memory_utilization": ("inference", None),
    "attention_sharding": ("inference", None), "weight_layout": ("inference", None),
}


def check_mode_arguments(args: dict):
    """Refuse an argument given to one estimate for a mode it does not apply to (``seq_len`` in
    inference), naming what that mode takes instead (sweeps, which may span both modes, keep them)."""
    mode = args.get("mode")
    if isinstance(mode, list) and len(mode) != 1:
        return
    mode = (mode[0] if isinstance(mode, list) else mode) or ARGUMENTS["mode"][1]
    for name, (only, instead) in MODE_ONLY.items():
        given = args.get(name)
        if given is not None and given != ARGUMENTS[name][1] and only != mode:
            options = " and ".join("--" + n.replace("_", "-") for n in instead.split(" and ")) if instead else ""
            hint = f"; {mode} takes {instead} ({options})" if instead else ""
            raise InputError(f"applies to mode {only} only, not {mode}{hint}", field=name)


#: argument -> (kind, default), the form the checks and the grid read
ARGUMENTS = {a.name: (a.kind, a.default) for a in ARGUMENT_TABLE}


#: number kinds: what the message says is expected, and the test a finite value must pass
_RANGES = {
    "pos": ("a positive number", lambda x: x > 0),
    "pue": ("a number >= 1 (facility energy over IT energy)", lambda x: x >= 1),
    "frac": ("a fraction in (0, 1]", lambda x: 0 < x <= 1),
    "share": ("a share in [0, 1]", lambda x: 0 <= x <= 1),
}


def check_value(name: str, value):
    """Validate one argument value (not a list); return it normalised."""
    kind, _ = ARGUMENTS[name]
    if value is None:
        return None
    if isinstance(kind, tuple):
        if isinstance(value, bool) or value not in kind:
            raise unknown(name, value, [str(k) for k in kind], field=name)
        return value
    if kind == "int":
        return check_whole(value, name)
    if kind in _RANGES:
        expected, within = _RANGES[kind]
        number = finite(value)
        if number is None or not within(number):
            raise InputError(f"expected {expected}, got {shown(value)}", field=name)
        return number
    if kind == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise InputError(f"expected true or false, got {shown(value)}", field=name)
        return bool(value)
    if kind == "layers":
        if not isinstance(value, (list, tuple)) or not value:
            raise InputError(f"expected a list of layer counts, one per pipeline stage, got {shown(value)}", field=name)
        counts = tuple(check_whole(v, f"{name}[{i}]", 0) for i, v in enumerate(value))
        if sum(counts) < 1:
            raise InputError("the stages hold no layer", field=name)
        return counts
    if kind == "dtype":
        return check_dtype(value, name)
    if kind == "offload":
        return canonical(value, name)
    if kind == "place":
        if not isinstance(value, dict):
            raise InputError("expected a mapping such as {decode_attention: pim}", field=name)
        return check_place(value, name)
    if kind == "runtime":
        load_runtime(value, name)
        return value
    if kind == "model":
        load_model(value, name)
        return value
    if kind == "hardware":
        split_whatif(value, name)
        return value
    raise AssertionError(kind)  # pragma: no cover - programming error
