"""Numeric columns of a :class:`~perfsim.plan.grid.Grid`: model, hardware, runtime and plan as arrays.

Columns whose argument has a single value stay scalars and broadcast, so only swept arguments
cost per-row memory and time.
"""

from __future__ import annotations

import functools

import numpy as np

from perfsim.plan.arguments import Finetune, Mode, Recompute, Schedule
from perfsim.plan.devices import device_columns, device_values
from perfsim.plan.grid import DEFAULT_AXES, NUMBERS
from perfsim.plan.offload import offload_columns
from perfsim.specs.dtypes import DTYPE_BYTES, storage_bytes
from perfsim.specs.hardware import FAMILIES, WHATIF_KEYS, split_whatif
from perfsim.specs.memo import Memo, Unkeyable, frozen
from perfsim.specs.model import MODEL_TYPES, load_model
from perfsim.specs.runtime import (
    DEFAULT_FSDP_RUNTIME,
    DEFAULT_OFFLOAD_RUNTIME,
    DEFAULT_PORTABLE_INFERENCE_RUNTIME,
    DEFAULT_RUNTIME,
    DEFAULT_TPU_TRAIN_RUNTIME,
    NVIDIA_FAMILIES,
    load_runtime,
)
from perfsim.specs.units import GIB

# hardware flat field -> column name, scale to SI
_HW = {
    "compute_units": ("units", 1.0), "gemm_tile_m": ("tile_m", 1.0), "gemm_tile_n": ("tile_n", 1.0),
    "gemm_tile_min_reuse": ("tile_reuse", 1.0),
    "hbm_bandwidth_gb_s": ("hbm_bw", 1e9), "hbm_capacity_gib": ("capacity_bytes", GIB),
    "kernel_launch_us": ("device_launch_s", 1e-6), "memory_max": ("memory_max", 1.0),
    "gemm_stream_latency_us": ("gemm_stream_s", 1e-6),
    "tdp_w": ("tdp_w", 1.0), "idle_w": ("idle_w", 1.0), "devices_per_node": ("devices_per_node", 1.0),
    "package_devices": ("package_devices", 1.0), "package_gb_s": ("package_bw", 1e9),
    "scaleup_gb_s": ("scaleup_bw", 1e9), "scaleup_efficiency": ("scaleup_eff", 1.0),
    "scaleup_latency_us": ("scaleup_lat_s", 1e-6), "scaleup_ll_latency_us": ("scaleup_ll_s", 1e-6),
    "scaleup_base_latency_us": ("scaleup_base_s", 1e-6),
    "scaleup_nvls_efficiency": ("nvls_eff", 1.0), "scaleup_nvls_latency_us": ("nvls_lat_s", 1e-6),
    "scaleup_domain_devices": ("scaleup_domain", 1.0), "scaleup_torus_dims": ("torus_dims", 1.0),
    "scaleup_torus_wrap_devices": ("torus_wrap", 1.0),
    "scaleout_gb_s": ("scaleout_bw", 1e9), "scaleout_efficiency": ("scaleout_eff", 1.0),
    "scaleout_latency_us": ("scaleout_lat_s", 1e-6), "scaleout_ll_latency_us": ("scaleout_ll_s", 1e-6),
    "host_link_gb_s": ("host_link_bw", 1e9), "host_link_efficiency": ("host_link_eff", 1.0),
    "host_memory_gib": ("host_memory_bytes", GIB), "nvme_bandwidth_gb_s": ("nvme_bw", 1e9),
    "cpu_tflops": ("cpu_flops", 1e12), "cpu_memory_bandwidth_gb_s": ("cpu_bw", 1e9),
    "cpu_memory_efficiency": ("cpu_mem_eff", 1.0), "nvme_write_bandwidth_gb_s": ("nvme_write_bw", 1e9),
    "cpu_thread_copy_gb_s": ("thread_copy_bw", 1e9),
    "nvme_capacity_gib": ("nvme_capacity_bytes", GIB), "nvme_direct": ("nvme_direct", 1.0),
    "active_w": ("active_w", 1.0), "matrix_w": ("matrix_w", 1.0), "memory_pj_per_byte": ("memory_j_per_byte", 1e-12),
    "link_pj_per_byte": ("link_j_per_byte", 1e-12), "host_w": ("host_w", 1.0),
    "host_cpu_w": ("host_cpu_w", 1.0), "host_nvme_w": ("host_nvme_w", 1.0), "host_nic_w": ("host_nic_w", 1.0),
    "psu_efficiency": ("psu_efficiency", 1.0), "voltage_floor": ("voltage_floor", 1.0),
    "host_gap_w": ("host_gap_w", 1.0),
    "clock_ghz": ("clock_ghz", 1.0), "min_clock_ghz": ("min_clock_ghz", 1.0),
}
# what-if key (specs.hardware.WHATIF_KEYS) -> (column, scale): the column of the flat field it overrides
_WHATIF = {key: _HW[field] if field in _HW else ("peak_flops", 1e12) for key, field in WHATIF_KEYS.items()}


#: default engines a row may run on (column ``default_engine``): the mode's own, then FSDP's and
#: offloading's, which take over a fully sharded training plan and an offloaded inference plan, and
#: the TPU's training engine, and the inference engine of a device that is not an NVIDIA GPU
ENGINE_DEFAULTS = (None, DEFAULT_FSDP_RUNTIME, DEFAULT_OFFLOAD_RUNTIME, DEFAULT_TPU_TRAIN_RUNTIME,
                   DEFAULT_PORTABLE_INFERENCE_RUNTIME)


def runs_nvidia_stack(spec) -> bool:
    """Whether a device runs NVIDIA's own software (TensorRT-LLM): an NVIDIA GPU."""
    return spec.kind == "gpu" and spec.family in NVIDIA_FAMILIES


def default_inference_code(spec) -> float:
    """The ``default_engine`` code of an inference plan that names no engine, on ``spec``."""
    return 0.0 if runs_nvidia_stack(spec) else float(ENGINE_DEFAULTS.index(DEFAULT_PORTABLE_INFERENCE_RUNTIME))


def engine_name(mode: str, runtime, default_engine: float) -> str:
    """The engine a row ran on: the named ``runtime`` (its name, or a what-if dict's ``base``), or
    the default its ``default_engine`` column codes."""
    if runtime is not None:
        return runtime if isinstance(runtime, str) else f"{runtime['base']} (modified)"
    return ENGINE_DEFAULTS[int(default_engine)] or DEFAULT_RUNTIME[mode]


#: architecture families without FlashAttention-2 kernels (pre-Ampere GPUs)
_NO_FLASH = ("volta", "turing")


def hardware_columns(spec, overrides=None, dtype=None) -> dict:
    """Scalar cost-model columns of one hardware spec: its numbers, its device kind's
    (:func:`perfsim.plan.devices.device_values`) and, given a ``dtype``, the rates at that format
    (:func:`dtype_values`); what-if overrides applied last, as in :func:`build`."""
    values = {field: spec.values[field] * scale for field, (_, scale) in _HW.items() if field in spec.values}
    c = {_HW[field][0]: value for field, value in values.items()}
    c.update(device_values(spec))
    if dtype is not None:
        c.update(dtype_values(spec, dtype))
    for key, value in (overrides or {}).items():
        if key in _WHATIF:
            col, scale = _WHATIF[key]
            c[col] = value * scale
    return c


def dtype_values(spec, dtype) -> dict:
    """Rates of one spec at compute format ``dtype``: ``peak_flops`` (FLOP/s, NaN without the
    format), ``gemm_max``, the 16-bit GEMMs' of an 8/4-bit recipe (``wide_gemm_max``), and the
    attention core's (``attn_peak_ratio``, ``attn_gemm_max``; an fp8 core's ``attn8_peak_ratio``,
    ``attn8_gemm_max``; the ceilings :meth:`HardwareSpec.attention_max`)."""
    # the attention core (softmax between two matmuls) runs in 16-bit even in 8/4-bit recipes
    attention = _attention_dtype(spec, dtype)
    return {"peak_flops": spec.peak(dtype) * 1e12, "gemm_max": spec.gemm_max(dtype),
            "wide_gemm_max": spec.gemm_max(attention),
            "attn_peak_ratio": spec.peak(attention) / spec.peak(dtype), "attn_gemm_max": spec.attention_max(attention),
            # an fp8 attention core (an engine's fp8 context FMHA): NaN where the device lacks fp8
            "attn8_peak_ratio": spec.peak("fp8") / spec.peak(dtype), "attn8_gemm_max": spec.attention_max("fp8")}


def _gather_dicts(grid, name, dicts):
    """Columns from one dict of floats per distinct value of argument ``name``."""
    keys = dicts[0].keys()
    return {k: grid.gather(name, [d[k] for d in dicts]) for k in keys}


def _pair(grid, a, b, matrix):
    """Per-row entry of ``matrix[value of a, value of b]``."""
    if len(grid.values(a)) == 1 and len(grid.values(b)) == 1 and type(matrix[0][0]) in NUMBERS:
        return np.float64(matrix[0][0])  # what the matrix's one entry would be, without the matrix
    matrix = np.asarray(matrix, dtype=float)
    ia = grid.codes(a) if len(grid.values(a)) > 1 else 0
    ib = grid.codes(b) if len(grid.values(b)) > 1 else 0
    return matrix[ia, ib]


def _attention_dtype(spec, dtype):
    """Format the attention core computes in: ``dtype`` when 16-bit or wider, else the device's
    16-bit format (FlashAttention and cuDNN attention keep softmax inputs in bf16/fp16)."""
    if DTYPE_BYTES[dtype] >= 2:
        return dtype
    return next((d for d in ("bf16", "fp16") if d in spec.peak_tflops), dtype)


#: the columns of one-row grids (an estimate), by the row's arguments: (the specs they were read
#: from, the columns); an entry holds while the specs it read are the ones its arguments name now
_ONE_ROW = Memo(64)


def build(grid) -> dict:
    """All numeric columns the cost models read (see :mod:`perfsim.graph.transformer`).

    The columns of a grid of one configuration are kept (:data:`_ONE_ROW`) and handed out again
    while its model, hardware and runtime specs are unchanged (a spec file edited on disk is read
    again, and then so are the columns): a new dict each time, of NumPy numbers (:func:`_numbers`); a
    configuration that differs from one kept only in its batch and lengths takes that one's columns
    (:data:`_CONFIGURATION`). Those of the specs alone are kept so for any grid whose spec arguments have
    one value each (:data:`_SPEC_PART`).
    """
    key = _row_key(grid)
    if key is None:
        return _build(grid)
    specs = _specs(grid)
    return _kept(_ONE_ROW, key, specs, lambda: _other_lengths(grid, key, specs))


#: the arguments whose columns :func:`_build` gathers as given and reads nowhere else: the batch and
#: lengths, which size the work, not the configuration
_LENGTHS = ("batch", "prompt_len", "gen_len", "seq_len")
#: the columns of one configuration (:func:`_numbers`), by the row key without the lengths' parts: (the
#: specs they were read from, the columns), so a call that changes only the batch or lengths reuses them
_CONFIGURATION = Memo(16)


def _other_lengths(grid, key, specs) -> dict:
    """:func:`_numbers` of :func:`_build` of a one-row grid: where a configuration that differs from it in
    :data:`_LENGTHS` only was built from the same specs, its columns with this grid's lengths gathered as
    :func:`_build` gathers them (the same values, types and key order); else built and kept for the next."""
    part = tuple(p for p in key if p[0] not in _LENGTHS)
    hit = _CONFIGURATION.get(part)
    if hit is not None and all(a is b for a, b in zip(hit[0], specs, strict=True)):
        c = dict(hit[1])
        for name in _LENGTHS:  # (the others are numbers already)
            value = grid.gather(name, grid.values(name))
            c[name] = value[()] if value.__class__ is np.ndarray and not value.ndim else value
        return c
    c = _read_only(_numbers(_build(grid)))
    _CONFIGURATION.put(part, (specs, dict(c)))
    return c


def _numbers(c: dict) -> dict:
    """The columns of one configuration with each array of no dimension as the NumPy number it holds
    (the same value and type; NumPy's arithmetic on a number takes a fraction of the time it takes on
    an array of no dimension)."""
    return {k: v[()] if v.__class__ is np.ndarray and not v.ndim else v for k, v in c.items()}


def _kept(memo, key, specs, build) -> dict:
    """``build()``'s columns (their arrays read-only: :func:`_read_only`) kept in ``memo`` under ``key`` and
    handed out again while the specs they were read from are the same objects (a spec file edited on disk
    is read again): a new dict each time."""
    hit = memo.get(key)
    if hit is not None and len(hit[0]) == len(specs) and all(a is b for a, b in zip(hit[0], specs, strict=True)):
        return dict(hit[1])
    c = build()
    memo.put(key, (specs, c))
    return dict(c)


def _read_only(c: dict) -> dict:
    """``c``, each of its arrays made read-only (a kept column no caller can change)."""
    for value in c.values():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    return c


def _row_key(grid):
    """Key of a grid whose every argument has one value: each argument's value as given; None for
    a grid of several rows or a value that cannot be keyed. (An argument at its default has its key
    made once: :data:`_DEFAULT_KEYS`.)"""
    key = []
    for name, axis in grid.axes.items():
        if axis is DEFAULT_AXES.get(name):
            part = _DEFAULT_KEYS[name]
            if part is None:
                return None
            key.append(part)
            continue
        if len(axis.values) != 1:
            return None
        try:
            key.append((name, frozen(axis.values[0])))
        except Unkeyable:
            return None
    return tuple(key)


def _default_key(name, axis):
    try:
        return name, frozen(axis.values[0])
    except Unkeyable:  # pragma: no cover - every default is a plain value
        return None


#: the key part of each argument at its default (:data:`perfsim.plan.grid.DEFAULT_AXES`; None: not keyed)
_DEFAULT_KEYS = {name: _default_key(name, axis) for name, axis in DEFAULT_AXES.items()}


def _specs(grid) -> tuple:
    """The specs read from files that a one-row grid's columns depend on and that a file edited on
    disk replaces: its model and hardware (a runtime profile is read once per process)."""
    return load_model(grid.values("model")[0]), split_whatif(grid.values("hardware")[0])[0]


#: the spec columns (:func:`_spec_columns`) of grids whose model, hardware, dtype, mode, runtime and
#: device arguments have one value each, by those values: (the specs they were read from, the columns)
_SPEC_PART = Memo(64)
#: the arguments the spec columns depend on (and every ``hardware.KEY`` what-if axis)
_SPEC_ARGUMENTS = ("model", "hardware", "dtype", "mode", "runtime", "pim_mode", "sub_batches", "place")


def _spec_part(grid) -> dict:
    """:func:`_spec_columns` of ``grid``, kept between calls (a sweep's boxes and calls share them)
    where its arguments have one value each and handed out again while the specs they were read
    from are unchanged (a spec file edited on disk is read again): a new dict each time, its
    arrays read-only."""
    try:
        if any(name.startswith("hardware.") for name in grid.axes) \
                or any(len(grid.values(name)) != 1 for name in _SPEC_ARGUMENTS):
            raise Unkeyable("several values")
        key = tuple(frozen(grid.values(name)[0]) for name in _SPEC_ARGUMENTS)
    except Unkeyable:
        return _spec_columns(grid)
    runtime, mode = grid.values("runtime")[0], grid.values("mode")[0]
    specs = (*_specs(grid), load_runtime(runtime if runtime is not None else DEFAULT_RUNTIME[mode]))
    return _kept(_SPEC_PART, key, specs, lambda: _read_only(_spec_columns(grid)))


def _spec_columns(grid) -> dict:
    """The columns of the model, hardware (at the run's dtype, what-if keys applied, its devices'
    and placement's) and runtime specs."""
    c: dict = {}
    models = [load_model(m) for m in grid.values("model")]
    c.update(_gather_dicts(grid, "model", [m.columns() for m in models]))

    specs = [split_whatif(h)[0] for h in grid.values("hardware")]
    for field, (col, scale) in _HW.items():
        c[col] = grid.gather("hardware", [s[field] * scale for s in specs])
    dtypes = grid.values("dtype")
    rates = [[dtype_values(s, d) for d in dtypes] for s in specs]
    for key in rates[0][0]:
        c[key] = _pair(grid, "hardware", "dtype", [[r[key] for r in row] for row in rates])
    c["vector_flops"] = grid.gather("hardware", [max(s.vector_tflops.values(), default=np.nan) * 1e12 for s in specs])
    for key, (col, scale) in _WHATIF.items():
        name = f"hardware.{key}"
        if name in grid.axes:
            c[col] = grid.gather(name, [v * scale for v in grid.values(name)])

    # NPU engines, PIM memory and the placement plan (perfsim.analytical.heterogeneous)
    c.update(device_columns(grid, specs))

    modes = grid.values("mode")
    runtimes = grid.values("runtime")
    table = [[load_runtime(r if r is not None else DEFAULT_RUNTIME[m]).columns() for m in modes] for r in runtimes]
    for key in table[0][0]:
        c[key] = _pair(grid, "runtime", "mode", [[row[j][key] for j in range(len(modes))] for row in table])
    return c


def _build(grid) -> dict:
    c = _spec_part(grid)
    specs = [split_whatif(h)[0] for h in grid.values("hardware")]
    dtypes, modes, runtimes = grid.values("dtype"), grid.values("mode"), grid.values("runtime")
    # offloading plans: per-tier fraction columns (perfsim.plan.offload)
    c.update(offload_columns(grid, c["experts"]))

    # the engine of a row: named (-1), or a default (ENGINE_DEFAULTS: the mode's, FSDP's, offloading's)
    c["default_engine"] = np.where(grid.gather("runtime", [float(r is None) for r in runtimes]) > 0, 0.0, -1.0)

    def default_engine(name, mode, where):
        """Rows of ``mode`` that name no engine and satisfy ``where`` run on engine ``name``."""
        if None not in runtimes or mode not in modes:
            return
        use = (grid.gather("runtime", [float(r is None) for r in runtimes]) > 0) \
            & (grid.gather("mode", [float(m == mode) for m in modes]) > 0) & where
        if np.any(use):
            for key, value in load_runtime(name).columns().items():
                c[key] = np.where(use, value, c[key])
            c["default_engine"] = np.where(use, float(ENGINE_DEFAULTS.index(name)), c["default_engine"])

    # the default engine of a fully sharded training plan is an FSDP one, that of an offloaded
    # inference plan an offloading one
    default_engine(DEFAULT_FSDP_RUNTIME, "train", grid.gather("zero", [float(z == 3) for z in grid.values("zero")]) > 0)
    default_engine(DEFAULT_PORTABLE_INFERENCE_RUNTIME, "inference",
                   grid.gather("hardware", [float(not runs_nvidia_stack(s)) for s in specs]) > 0)
    default_engine(DEFAULT_OFFLOAD_RUNTIME, "inference", c["offloaded"] > 0)
    # a TPU trains with a JAX/XLA stack, not a CUDA one
    default_engine(DEFAULT_TPU_TRAIN_RUNTIME, "train", grid.gather("hardware", [float(s.kind == "tpu") for s in specs]) > 0)
    # attention kernels tuned per architecture family: the runtime's figure for this device's family
    family = grid.gather("hardware", [float(FAMILIES.index(s.family)) for s in specs])
    present = {s.family for s in specs}
    rows_of = [(i, family == i) for i, name in enumerate(FAMILIES) if name in present]  # (each family's rows)

    def for_family(key, *, keep=False):
        """The runtime's figure ``<key>_<family>`` for each row's device family (every row's family
        is among the specs', so each row takes its own family's column); the per-family columns
        dropped unless ``keep``."""
        value = c.get(key, 0.0)
        names = _family_keys(key)
        columns = [c[name] for name in names] if keep else [c.pop(name) for name in names]
        for i, rows in rows_of:
            value = np.where(rows, columns[i], value)
        return value

    c["attention_eff"] = for_family("attention_eff", keep=True)
    # the engine's host KV cache element for each row's model type (cpu_attention_cache_bytes_for)
    host_kv = c["cpu_cache_bytes"]
    for i, name in enumerate(MODEL_TYPES):
        host_kv = np.where(c["model_type"] == i + 1, c.pop(f"cpu_cache_bytes_{name}"), host_kv)
    c["host_kv_bytes"] = host_kv
    # the attention backward's rate, the engine's fused MoE expert GEMMs, its decode- and
    # prefill-attention kernels' costs, and serving limits the engine sets by device
    decode_keys, mla_keys = ([f"decode_attn_{mla}{part}_s{q}" for part in ("fixed", "unit") for q in ("", "_fp8")]
                             for mla in ("", "mla_"))
    for key in ("attention_bwd_ratio", "max_num_seqs", "max_num_batched_tokens", "moe_gemm_eff", "moe_memory_eff",
                "moe_dispatch_q", *decode_keys, "prefill_attn_fixed_s", "prefill_attn_tile_s", "prefill_attn_eff",
                "prefill_attn_eff_fp8", "fp8_transpose",
                *(f"{q}_gemm_{part}_s" for q in ("fp4", "fp8_block") for part in ("fixed", "k")),
                "fp8_block_gemm_eff", *mla_keys, "custom_ar_lat_s", "custom_ar_eff"):
        c[key] = for_family(key)
    # FlashAttention-2 needs Ampere or later (its README: sm80+; FlashAttention-3 sm90): on an older
    # GPU the stack runs attention as batched GEMMs with the scores in memory, at the GEMM ceiling
    # (the eager kernels of runtimes/megatron-2021.yaml)
    no_flash = grid.gather("hardware", [float(s.family in _NO_FLASH) for s in specs]) > 0
    if np.any(no_flash):
        c["attention_eff"] = np.where(no_flash & (c["flash"] > 0), 1.0, c["attention_eff"])
        c["prefill_attn_eff"] = np.where(no_flash & (c["flash"] > 0), 1.0, c["prefill_attn_eff"])
        c["flash"] = np.where(no_flash, 0.0, c["flash"])
    # eager attention's backward is batched GEMMs, at the ceiling its forward's run at
    c["attention_bwd_ratio"] = np.where(c["flash"] > 0, c["attention_bwd_ratio"], 1.0)
    given = _optional(grid, "zero")
    c["zero"] = np.where(np.isnan(given), c["default_zero"], given)  # the engine's own default
    c["launch_s"] = np.where(c["runtime_launch_us"] >= 0, c["runtime_launch_us"] * 1e-6, c["device_launch_s"])

    for name in ("tp", "pp", "cp", "ep", "virtual_stages", "seq_len", "batch", "prompt_len",
                 "gen_len", "lora_rank"):
        c[name] = grid.gather(name, grid.values(name))
    # pipeline stages: layers on the fullest stage, the balanced split's ceil(L / pp) or the largest
    # count of an explicit pp_layers (Megatron-core and torchtitan split models pp does not divide);
    # the stage count and layer total of pp_layers for the plan's checks
    splits = grid.values("pp_layers")
    explicit = grid.gather("pp_layers", [np.nan if s is None else max(s) for s in splits])
    c["stage_layers"] = np.where(np.isnan(explicit), np.ceil(c["layers"] / c["pp"]), explicit)
    c["pp_layers_stages"] = grid.gather("pp_layers", [np.nan if s is None else len(s) for s in splits])
    c["pp_layers_total"] = grid.gather("pp_layers", [np.nan if s is None else sum(s) for s in splits])
    # micro_batch: sequences per micro-batch in training (1 when not given); in inference, the GPU
    # batch of an offloading engine's block (FlexGen), NaN (the whole batch) when not given
    c["gpu_batch"] = _optional(grid, "micro_batch")
    c["micro_batch"] = np.where(np.isnan(c["gpu_batch"]), 1.0, c["gpu_batch"])
    given = _optional(grid, "sp")
    c["sp"] = np.where(np.isnan(given), c["default_sp"], given)  # the engine's own default
    c["gpu_memory_utilization"] = grid.gather("gpu_memory_utilization", grid.values("gpu_memory_utilization"))
    c["train"] = grid.gather("mode", [Mode.of(m) for m in modes])
    c["recompute"] = grid.gather("recompute", [Recompute.of(r) for r in grid.values("recompute")])
    c["schedule"] = grid.gather("schedule", [Schedule.of(s) for s in grid.values("schedule")])
    c["lora"] = grid.gather("finetune", [Finetune.of(f) for f in grid.values("finetune")])
    act = grid.gather("dtype", [DTYPE_BYTES[d] for d in dtypes])
    # tensor cores take fp8/int8/fp4 inputs, activations between kernels stay 16-bit
    c["act_bytes"] = np.maximum(act, 2.0)
    c["compute_bytes"] = act
    # fp16 parameters: the engine's gradient width and the fp32 gradient copy its optimizer keeps
    fp16 = grid.gather("dtype", [float(d == "fp16") for d in dtypes]) > 0
    c["main_grad_bytes"] = np.where(fp16, c.pop("fp16_main_grad_bytes"), 0.0)
    c["grad_bytes"] = np.where(fp16, c.pop("fp16_grad_bytes"), c["grad_bytes"])
    # storage formats (weight-only quantisation, quantised KV cache); block scales included
    for name, col in (("weight_dtype", "w_bytes"), ("kv_dtype", "kv_bytes")):
        c[col] = _pair(grid, name, "dtype", [[storage_bytes(v if v is not None else d) for d in dtypes]
                                             for v in grid.values(name)])
    # the decode-attention kernels' fixed costs over the plan's KV-cache format (8-bit: other kernels)
    for part in ("fixed", "unit"):
        for mla in ("", "mla_"):
            key = f"decode_attn_{mla}{part}_s"
            c[key] = np.where(c["kv_bytes"] < 2.0, c.pop(f"{key}_fp8"), c[key])
    # an engine that runs its context attention in fp8 over an fp8 KV cache (TensorRT-LLM's fp8
    # context FMHA, runtime prefill_attention_fp8_efficiency_on): the prefill call's core at the fp8
    # peak and GEMM ceiling, at that kernel's own long-call share; else the 16-bit core above
    kv8 = _pair(grid, "kv_dtype", "dtype", [[float((v or d) == "fp8") for d in dtypes] for v in grid.values("kv_dtype")])
    eff8 = c.pop("prefill_attn_eff_fp8")
    fp8_core = (kv8 > 0) & np.isfinite(eff8 + c["attn8_peak_ratio"])
    c["prefill_attn_peak_ratio"] = np.where(fp8_core, c["attn8_peak_ratio"], c["attn_peak_ratio"])
    c["prefill_attn_gemm_max"] = np.where(fp8_core, c["attn8_gemm_max"], c["attn_gemm_max"])
    c["prefill_attn_eff"] = np.where(fp8_core, eff8, c["prefill_attn_eff"])
    # the engine's block-scaled dense GEMMs walk K one output tile per SM: nvfp4, and fp8 where the
    # model's checkpoint carries 128-element block scales (its quantization_config); else none
    fp8_block = (c["compute_bytes"] == 1.0) & (c["fp8_block"] > 0)
    for part in ("fixed", "k"):
        fp4, fp8b = c.pop(f"fp4_gemm_{part}_s"), c.pop(f"fp8_block_gemm_{part}_s")
        c[f"walk_{part}_s"] = np.where(c["compute_bytes"] <= 0.5, fp4, np.where(fp8_block, fp8b, 0.0))
    c["block_gemm_eff"] = np.where(fp8_block, c.pop("fp8_block_gemm_eff"), 1.0)
    # weights stored in another format than the compute one are converted inside the GEMM kernel
    c["dequant"] = _pair(grid, "weight_dtype", "dtype", [[float(v is not None and v != d) for d in dtypes]
                                                        for v in grid.values("weight_dtype")])
    tp_pp_cp = c["tp"] * c["pp"] * c["cp"]
    nd_col = _optional(grid, "num_devices")
    dp = _optional(grid, "dp")  # derived from num_devices where not given
    c["dp"] = np.where(np.isnan(dp), np.where(np.isnan(nd_col), 1.0, nd_col / tp_pp_cp), dp)
    c["num_devices"] = np.where(np.isnan(nd_col), tp_pp_cp * c["dp"], nd_col)
    c["global_batch"] = _optional(grid, "global_batch")
    c["global_batch"] = np.where(np.isnan(c["global_batch"]), 8.0 * np.floor(np.maximum(c["dp"], 1.0)), c["global_batch"])
    c["train_tokens"] = _optional(grid, "train_tokens")
    c["zero_shard_size"] = _optional(grid, "zero_shard_size")
    c["zero_shard_size"] = np.where(np.isnan(c["zero_shard_size"]), c["dp"] * c["cp"], c["zero_shard_size"])
    c["capacity_factor"] = _optional(grid, "capacity_factor")  # NaN: dropless routing
    c["expert_hit_rate"] = _optional(grid, "expert_hit_rate")  # NaN: the expert cache's device share
    c["power_cap_w"] = _optional(grid, "power_cap_w")  # NaN: no cap
    c["pue"] = grid.gather("pue", grid.values("pue"))
    c["wall_whole_node"] = grid.gather("wall_energy", [float(v == "node") for v in grid.values("wall_energy")])
    c["attn_batch"] = grid.gather("attention_sharding", [float(v == "batch") for v in grid.values("attention_sharding")])
    c["weights_2d"] = grid.gather("weight_layout", [float(v == "2d") for v in grid.values("weight_layout")])
    return c


@functools.lru_cache(maxsize=256)
def _family_keys(key: str) -> tuple:
    """The runtime's per-family column names of ``key``, ``<key>_<family>``, in :data:`FAMILIES` order."""
    return tuple(f"{key}_{name}" for name in FAMILIES)


def _optional(grid, name):
    """Column of an argument without a default: NaN where it was not given."""
    values = grid.values(name)
    if values == [None]:
        return np.nan
    return grid.gather(name, [v if v is not None else np.nan for v in values])
