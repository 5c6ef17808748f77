"""Software-stack profiles (``runtimes/*.yaml``): what the engine adds on top of the chip.

Measured systems differ by engine as much as by chip: host overhead per step, kernel launch
cost (CUDA graphs or not), how many elementwise kernels a layer runs (fusion), the attention
kernel (flash or eager), overlap of communication, memory fragmentation. Keeping these in data
keeps device efficiency physical and lets every validation case name the engine it ran on.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import MappingProxyType

from perfsim.errors import InputError, unknown
from perfsim.specs import schema as S
from perfsim.specs.hardware import FAMILIES
from perfsim.specs.memo import Memo, Unkeyable, frozen
from perfsim.specs.model import MODEL_TYPES
from perfsim.specs.paths import read_once, zoo
from perfsim.specs.same_as import referenced, taken
from perfsim.specs.yamlio import LineDict, load_yaml

_SCHEMA = {
    "name": S.STR, "description": S.STR, "mode": S.STR,
    "step_overhead_ms": S.NUM, "kernel_launch_us": S.NUM, "kernels_per_layer": S.NUM,
    "attention": S.STR, "attention_efficiency": S.NUM, "grad_reduce_bytes": S.NUM,
    "dp_overlap": S.NUM, "tp_overlap": S.NUM, "dropout": S.BOOL, "fragmentation": S.NUM, "compile": S.BOOL,
    "compiled_kernels_per_layer": S.NUM, "default_zero": S.INT, "selective_recompute_matmuls": S.NUM,
    "eager_elementwise_traffic": S.NUM, "attention_efficiency_on": S.NumMap(FAMILIES),
    "attention_backward_ratio": S.NUM, "attention_backward_ratio_on": S.NumMap(FAMILIES),
    "offload_prefetch": S.NUM, "offloaded_kv_attention": S.STR, "cpu_attention_traffic": S.NUM,
    "host_memory_pinned": S.BOOL, "cpu_attention_expands_kv": S.BOOL, "block_schedule": S.BOOL,
    "cpu_attention_cache_bytes": S.NUM, "cpu_attention_cache_bytes_for": S.NumMap(MODEL_TYPES),
    "cpu_attention_compute_bytes": S.NUM,
    "loss_bytes_per_logit": S.NUM, "loss_forward_bytes_per_logit": S.NUM, "loss_backward_bytes_per_logit": S.NUM,
    "loss_forward_kernels": S.NUM, "loss_backward_kernels": S.NUM, "host_per_seq_us": S.NUM, "max_num_seqs": S.NUM,
    "host_overlap": S.NUM,
    "max_num_batched_tokens": S.NUM, "max_num_seqs_on": S.NumMap(FAMILIES),
    "max_num_batched_tokens_on": S.NumMap(FAMILIES),
    "moe_gemm_efficiency_on": S.NumMap(FAMILIES), "moe_memory_efficiency_on": S.NumMap(FAMILIES),
    "moe_exchange": S.STR, "moe_dispatch_quantized_on": S.NumMap(FAMILIES), "moe_all_to_all_domain": S.NUM,
    "fp16_grad_reduce_bytes": S.NUM, "fp16_main_grad_bytes": S.NUM,
    "param_gathers_per_layer": S.NUM, "default_sp": S.BOOL, "grad_bucket_params": S.NUM, "grad_bucket_params_per_rank": S.NUM,
    "param_gather_reuse_params": S.NUM, "gather_rank_copies": S.BOOL,
    "decode_offload_prefetch": S.NUM, "kv_cache_pinned": S.BOOL, "kv_store_gb_s": S.NUM, "hidden_store_gb_s": S.NUM,
    "dequant_pass_bytes": S.NUM, "driver_staging": S.BOOL, "nvme_relay": S.BOOL,
    "decode_attention_fixed_us_on": S.NumMap(FAMILIES), "decode_attention_unit_us_on": S.NumMap(FAMILIES),
    "decode_attention_fp8_fixed_us_on": S.NumMap(FAMILIES), "decode_attention_fp8_unit_us_on": S.NumMap(FAMILIES),
    "prefill_attention_fixed_us_on": S.NumMap(FAMILIES), "prefill_attention_tile_us_on": S.NumMap(FAMILIES),
    "fp4_gemm_fixed_us_on": S.NumMap(FAMILIES), "fp4_gemm_k_ns_on": S.NumMap(FAMILIES),
    "fp8_block_gemm_fixed_us_on": S.NumMap(FAMILIES), "fp8_block_gemm_k_ns_on": S.NumMap(FAMILIES),
    "fp8_block_gemm_efficiency_on": S.NumMap(FAMILIES),
    "prefill_attention_efficiency_on": S.NumMap(FAMILIES), "prefill_attention_fp8_efficiency_on": S.NumMap(FAMILIES),
    "decode_attention_mla_fixed_us_on": S.NumMap(FAMILIES), "decode_attention_mla_unit_us_on": S.NumMap(FAMILIES),
    "decode_attention_mla_fp8_fixed_us_on": S.NumMap(FAMILIES),
    "decode_attention_mla_fp8_unit_us_on": S.NumMap(FAMILIES),
    "fp8_norm_cast": S.BOOL, "fp8_weight_cache": S.BOOL, "fp8_transpose_on": S.NumMap(FAMILIES),
    "lm_head_16bit": S.BOOL,
    "custom_allreduce_max_bytes": S.NUM, "custom_allreduce_tp2_max_bytes": S.NUM,
    "custom_allreduce_latency_us_on": S.NumMap(FAMILIES), "custom_allreduce_efficiency_on": S.NumMap(FAMILIES),
}
_REQUIRED = ("name", "description", "mode", "step_overhead_ms", "kernels_per_layer", "attention",
             "attention_efficiency", "grad_reduce_bytes", "dp_overlap", "tp_overlap", "dropout", "fragmentation")
_FRACTIONS = ("attention_efficiency", "dp_overlap", "tp_overlap", "fragmentation", "selective_recompute_matmuls",
              "offload_prefetch", "decode_offload_prefetch", "host_overlap")

#: where an engine attends over an offloaded KV cache: on the device (the cache is loaded every
#: step), on the host CPU (in place), or whichever is faster for the plan
_KV_ATTENTION = ("device", "host", "faster")

#: the engine's fused MoE expert GEMMs' efficiencies (``moe_<kind>_efficiency_on``, per architecture family)
_MOE = ("gemm", "memory")
#: how an expert group spread over data-parallel ranks exchanges tokens (``moe_exchange``)
_EXCHANGES = ("all_to_all", "all_gather")

#: an engine's serving limits (per architecture family with ``<key>_on``)
_LIMITS = ("max_num_seqs", "max_num_batched_tokens")
#: the decode- and prefill-attention kernels' fixed costs (microseconds, per architecture family)
_FIXED_COSTS = (*(key for key in _SCHEMA if key.startswith(("decode_attention_", "prefill_attention_"))
                   and key.endswith("_us_on")), *(f"{q}_gemm_{part}_on" for q in ("fp4", "fp8_block")
                                                   for part in ("fixed_us", "k_ns")),
                "custom_allreduce_latency_us_on", "custom_allreduce_max_bytes", "custom_allreduce_tp2_max_bytes")
#: shares of a rate, in (0, 1]: the attention backward's rate over the forward's, the engine's
#: fused MoE and prefill kernels' shares of the device's ceilings
_RATES = ("attention_backward_ratio", "attention_backward_ratio_on", "prefill_attention_efficiency_on",
          "prefill_attention_fp8_efficiency_on", "fp8_block_gemm_efficiency_on",
          *(f"moe_{kind}_efficiency_on" for kind in _MOE), "custom_allreduce_efficiency_on")

#: engine used when ``runtime`` is not given, by mode
DEFAULT_RUNTIME = {"inference": "trt-llm", "train": "megatron"}
#: a fully sharded (ZeRO-3) training plan is not something Megatron-LM runs: its well-tuned
#: engine is PyTorch FSDP2 (torchtitan)
DEFAULT_FSDP_RUNTIME = "torchtitan"
#: nor does TensorRT-LLM stream weights or KV cache from host memory or NVMe: the well-tuned
#: engine of an offloaded inference plan is FlexGen (Sheng et al., ICML'23)
DEFAULT_OFFLOAD_RUNTIME = "flexgen"
#: a TPU trains with JAX/XLA: MaxText, Google's reference LLM trainer for TPUs
DEFAULT_TPU_TRAIN_RUNTIME = "maxtext"
#: TensorRT-LLM runs on NVIDIA GPUs only; elsewhere (AMD GPUs, TPUs, NPUs, PIM parts) the default
#: inference engine is vLLM, which has backends for them (CONTRACT: "`trt-llm` for inference on
#: NVIDIA GPUs, `vllm` elsewhere")
DEFAULT_PORTABLE_INFERENCE_RUNTIME = "vllm"
#: the architecture families of NVIDIA GPUs (perfsim.specs.hardware.FAMILIES)
NVIDIA_FAMILIES = ("volta", "turing", "ampere", "hopper", "blackwell")


@dataclass(frozen=True)
class RuntimeSpec:
    name: str
    values: MappingProxyType

    def columns(self) -> dict[str, float]:
        """Numbers the cost models read."""
        v = self.values
        kernels = v["kernels_per_layer"]
        if v.get("compile") and "compiled_kernels_per_layer" in v:
            kernels = v["compiled_kernels_per_layer"]
        return {
            "step_overhead_s": v["step_overhead_ms"] * 1e-3,
            # host time per sequence of an iteration the device does not hide (scheduling, input
            # preparation, sampling bookkeeping and output processing in Python, per request)
            "host_per_seq_s": v.get("host_per_seq_us", 0.0) * 1e-6,
            # the share of that host time (and of the step overhead) the engine runs while the
            # device executes the previous iteration's kernels (perfsim.cost.host)
            "host_overlap": v.get("host_overlap", 0.0),
            # the engine's own serving limits: sequences per iteration and tokens per iteration
            # (NaN where the profile gives none: the serving simulator's own defaults apply), and
            # per architecture family where the engine sets them by device (resolved in build)
            **{f"{key}{suffix}": v.get(f"{key}_on.{f}" if f else key, v.get(key, math.nan))
               for key in _LIMITS for f, suffix in ((None, ""), *((f, f"_{f}") for f in FAMILIES))},
            "runtime_launch_us": v.get("kernel_launch_us", -1.0),
            "kernels_per_layer": kernels,
            # unfused (eager) elementwise ops each read and write their tensor: traffic relative
            # to fused kernels; compiling fuses them back
            "elementwise_traffic": 1.0 if v.get("compile") else v.get("eager_elementwise_traffic", 1.0),
            "flash": 1.0 if v["attention"] == "flash" else 0.0,
            "attention_eff": v["attention_efficiency"],
            # the same kernels reach another share of the GEMM ceiling on other architectures
            **{f"attention_eff_{f}": v.get(f"attention_efficiency_on.{f}", v["attention_efficiency"]) for f in FAMILIES},
            # the backward kernel's rate over the forward's (FLOPs counted 2.5x the forward's),
            # per family as the forward's
            "attention_bwd_ratio": v.get("attention_backward_ratio", 1.0),
            **{f"attention_bwd_ratio_{f}": v.get(f"attention_backward_ratio_on.{f}", v.get("attention_backward_ratio", 1.0))
               for f in FAMILIES},
            # the engine's fused MoE expert GEMMs: their share of the device's GEMM ceiling and of its
            # streaming bandwidth for the expert weights, per family (1 where none is given; resolved in build)
            **{f"moe_{kind}_eff_{f}": v.get(f"moe_{kind}_efficiency_on.{f}", 1.0) for kind in _MOE for f in FAMILIES},
            # how an expert group spread over data-parallel ranks exchanges its tokens: two
            # all-to-alls of the routed copies, or an all-gather of every rank's tokens and a
            # reduce-scatter of the outputs (sent in the compute format where quantised, per family)
            "moe_all_gather": float(v.get("moe_exchange", "all_to_all") == "all_gather"),
            # ... except on a scale-up domain of at least this many devices (its NVLink all-to-all)
            "moe_a2a_domain": v.get("moe_all_to_all_domain", math.inf),
            **{f"moe_dispatch_q_{f}": v.get(f"moe_dispatch_quantized_on.{f}", 0.0) for f in FAMILIES},
            # 8-bit training: how the engine quantises the GEMM operands (perfsim.graph.transformer.fp8_cast_ops):
            # norms that write the quantised input, quantised weights kept across micro-batches, a
            # transposed copy of each quantised operand (per family; written where not given), and an
            # LM head left in 16 bits
            "fp8_norm_cast": float(v.get("fp8_norm_cast", False)),
            "fp8_weight_cache": float(v.get("fp8_weight_cache", False)),
            **{f"fp8_transpose_{f}": v.get(f"fp8_transpose_on.{f}", 1.0) for f in FAMILIES},
            "lm_head_wide": float(v.get("lm_head_16bit", False)),
            # the engine's paged decode-attention kernels: a fixed time per call beyond one launch,
            # and SM time per (sequence, KV head) work unit, per family, over a 16-bit and over an
            # 8-bit KV cache (other kernels; the 16-bit figure where none is given for 8-bit, 0 where none at all)
            **{f"decode_attn_{part}_s{q}_{f}": v.get(f"decode_attention{q}_{part}_us_on.{f}",
                                                     v.get(f"decode_attention_{part}_us_on.{f}", 0.0)) * 1e-6
               for part in ("fixed", "unit") for q in ("", "_fp8") for f in FAMILIES},
            # the engine's block-scaled dense GEMMs (nvfp4; fp8 with 128-element block scales) at small
            # M: a fixed time beyond one launch and a time per element of K that each output tile's
            # SM walks (per family; 0 where none is given)
            **{f"{q}_gemm_fixed_s_{f}": v.get(f"{q}_gemm_fixed_us_on.{f}", 0.0) * 1e-6
               for q in ("fp4", "fp8_block") for f in FAMILIES},
            **{f"{q}_gemm_k_s_{f}": v.get(f"{q}_gemm_k_ns_on.{f}", 0.0) * 1e-9
               for q in ("fp4", "fp8_block") for f in FAMILIES},
            # ... and the fp8 block-scaled GEMMs' share of the fp8 GEMM ceiling (1 where none is given)
            **{f"fp8_block_gemm_eff_{f}": v.get(f"fp8_block_gemm_efficiency_on.{f}", 1.0) for f in FAMILIES},
            # the engine's fused prefill-attention kernels: a fixed time per call beyond one launch, SM
            # time per (sequence, query head, query tile), and their long-call share of the GEMM ceiling,
            # per family (0, 0 and the runtime's attention efficiency where none is given)
            **{f"prefill_attn_{part}_s_{f}": v.get(f"prefill_attention_{part}_us_on.{f}", 0.0) * 1e-6
               for part in ("fixed", "tile") for f in FAMILIES},
            **{f"prefill_attn_eff_{f}": v.get(f"prefill_attention_efficiency_on.{f}",
                                              v.get(f"attention_efficiency_on.{f}", v["attention_efficiency"]))
               for f in FAMILIES},
            # ... and, where the engine runs its context attention in fp8 over an 8-bit KV cache on
            # a family, that kernel's long-call share of the fp8 GEMM ceiling (NaN: 16-bit there)
            **{f"prefill_attn_eff_fp8_{f}": v.get(f"prefill_attention_fp8_efficiency_on.{f}", math.nan)
               for f in FAMILIES},
            # ... and its MLA decode kernels over the cached latent (absorbed form), with their own
            # fixed time and SM time per (sequence, query head); NaN where the runtime gives none
            # (the figures above then apply, per (sequence, KV head))
            **{f"decode_attn_mla_{part}_s{q}_{f}": v.get(f"decode_attention_mla{q}_{part}_us_on.{f}",
                                                         v.get(f"decode_attention_mla_{part}_us_on.{f}", math.nan)) * 1e-6
               for part in ("fixed", "unit") for q in ("", "_fp8") for f in FAMILIES},
            # the engine's own all-reduce kernel inside a node (perfsim.cost.topology.engine_all_reduce):
            # buffers below which it runs (0: NCCL always; on 2 ranks its own limit), its fixed time
            # and its share of the link bandwidth per family (NaN where none is given: NCCL)
            "custom_ar_max": v.get("custom_allreduce_max_bytes", 0.0),
            "custom_ar_max_tp2": v.get("custom_allreduce_tp2_max_bytes", v.get("custom_allreduce_max_bytes", 0.0)),
            **{f"custom_ar_lat_s_{f}": v.get(f"custom_allreduce_latency_us_on.{f}", math.nan) * 1e-6 for f in FAMILIES},
            **{f"custom_ar_eff_{f}": v.get(f"custom_allreduce_efficiency_on.{f}", math.nan) for f in FAMILIES},
            "grad_bytes": v["grad_reduce_bytes"],
            # with fp16 parameters an engine may keep 16-bit gradients and give its optimizer an fp32
            # copy of its shard instead (Megatron-LM forces fp32 gradients for bf16 only)
            "fp16_grad_bytes": v.get("fp16_grad_reduce_bytes", v["grad_reduce_bytes"]),
            "fp16_main_grad_bytes": v.get("fp16_main_grad_bytes", 0.0),
            # how the engine cuts its data-parallel traffic into collectives: fully sharded weights
            # gathered in units of a fraction of a layer, gradients reduced in buckets of
            # max(params, params_per_rank x ranks) (0: the whole buffer in one collective)
            "gathers_per_layer": v.get("param_gathers_per_layer", 1.0),
            "grad_bucket_params": v.get("grad_bucket_params", 0.0),
            "grad_bucket_per_rank": v.get("grad_bucket_params_per_rank", 0.0),
            "dp_overlap": v["dp_overlap"],
            # ZeRO-3 weight gathers: the trace distance beyond which a gathered unit is released
            # before its next use (0: kept until the backward); and whether each gather copies
            # every rank's chunk as an op of its own (PyTorch's list all_gather) while the device waits
            "gather_reuse_params": v.get("param_gather_reuse_params", 0.0),
            "rank_copies": 1.0 if v.get("gather_rank_copies", False) else 0.0,
            "tp_overlap": v["tp_overlap"],
            "dropout": 1.0 if v["dropout"] else 0.0,
            "fragmentation": v["fragmentation"],
            "default_zero": float(v.get("default_zero", 0)),
            "default_sp": 1.0 if v.get("default_sp") else 0.0,
            # what ``recompute: selective`` recomputes: the attention core (Korthikanti et al.), or
            # this fraction of the layer's matmuls plus its elementwise ops (op-level policies)
            "sac_matmuls": v.get("selective_recompute_matmuls", 0.0),
            # bytes the loss holds per token and vocabulary entry at its peak (Megatron: fp32 logits)
            "loss_bytes": v.get("loss_bytes_per_logit", 4.0),
            # device-memory bytes the loss kernels move per token and vocabulary entry in training,
            # forward and backward, and their kernel counts (at least: read the 16-bit logits once,
            # write their 16-bit gradient once)
            "loss_fwd_traffic": v.get("loss_forward_bytes_per_logit", 2.0),
            "loss_bwd_traffic": v.get("loss_backward_bytes_per_logit", 2.0),
            "loss_fwd_kernels": v.get("loss_forward_kernels", 1.0),
            "loss_bwd_kernels": v.get("loss_backward_kernels", 1.0),
            # offloading: how much of the next layer's transfer hides behind this layer's
            # compute (double buffering), where attention over a host-resident KV cache runs (0:
            # on the device, after loading the cache; 1: on the host CPU; 2: whichever is faster)
            # and how many host-memory bytes the host moves per cached byte, and whether
            # host buffers are pinned (pageable copies are staged by the host thread, which then
            # cannot run host compute at the same time)
            "offload_prefetch": v.get("offload_prefetch", 1.0),
            "decode_prefetch": v.get("decode_offload_prefetch", v.get("offload_prefetch", 1.0)),
            "cpu_attention": float(_KV_ATTENTION.index(v.get("offloaded_kv_attention", "device"))),
            "cpu_attention_traffic": v.get("cpu_attention_traffic", 1.0),
            "host_pinned": 1.0 if v.get("host_memory_pinned", True) else 0.0,
            # the KV cache's host buffer may be allocated apart from the weights' (pinned or not),
            # and the engine may store the cache into it on a slower path than its DMA loads
            "kv_pinned": 1.0 if v.get("kv_cache_pinned", v.get("host_memory_pinned", True)) else 0.0,
            "kv_store_bw": v.get("kv_store_gb_s", 0.0) * 1e9,
            # pageable copies staged by the CUDA driver on the calling thread (a plain
            # tensor.to(device)), or by the engine's own multi-threaded copies into pinned buffers
            "driver_staging": 1.0 if v.get("driver_staging", True) else 0.0,
            "hidden_store_bw": v.get("hidden_store_gb_s", 0.0) * 1e9,
            # NVMe reads land in a relay buffer before their copy to the device starts (no overlap)
            "nvme_relay": 1.0 if v.get("nvme_relay", False) else 0.0,
            # weight-only quantisation expanded to 16 bits by a pass of its own (0: fused in the GEMM)
            "dequant_pass_bytes": v.get("dequant_pass_bytes", 0.0),
            # host attention that copies grouped KV heads out to every query head (repeat_kv)
            "cpu_attention_expands_kv": 1.0 if v.get("cpu_attention_expands_kv", False) else 0.0,
            # bytes per element of the engine's host KV cache, generally and per model type (0:
            # the KV dtype's), and of the copy the host attention computes on (0: the cache's own)
            "cpu_cache_bytes": v.get("cpu_attention_cache_bytes", 0.0),
            **{f"cpu_cache_bytes_{t}": v.get(f"cpu_attention_cache_bytes_for.{t}", v.get("cpu_attention_cache_bytes", 0.0))
               for t in MODEL_TYPES},
            "cpu_compute_bytes": v.get("cpu_attention_compute_bytes", 0.0),
            # an offloaded batch (a block) runs as GPU batches one after another, as many as the
            # device needs to hold one GPU batch's working set (FlexGen's zig-zag block schedule)
            "block_schedule": 1.0 if v.get("block_schedule", False) else 0.0,
        }


def runtime_names() -> list[str]:
    return sorted(zoo("runtimes"))


@functools.lru_cache(maxsize=64)
def _load(path: str) -> RuntimeSpec:
    if path in _READING:
        raise InputError("the `base:` or `same_as:` chain comes back to this file", file=path)
    _READING.add(path)
    try:
        data = _take_references(load_yaml(path), path)
        if isinstance(data, dict) and "base" in data:
            return _derived(data, path)
        values, _ = S.check(data, _SCHEMA, required=_REQUIRED)
        return _build(values, path)
    finally:
        _READING.discard(path)


#: profile files being read, for a ``base:`` or ``same_as:`` chain that comes back to itself
_READING: set = set()


def _take_references(data, path: str):
    """``data`` with each figure written ``{same_as: NAME, source: why}`` (a key's value, or one family's in a
    ``*_on`` map) replaced by NAME's resolved value of that key: a kernel several engines run (FlashAttention-2)
    keeps its measured share in one profile."""
    if not isinstance(data, dict):
        return data

    def take(ref, flat, parent, key):
        where = parent.where(key) if hasattr(parent, "where") else {"file": path}
        name = referenced(ref, flat, where, zoo("runtimes"), "runtime")
        values = load_runtime(name, f"{flat}.same_as").values
        if flat not in values:
            raise InputError(f"{name} gives no {flat} to take", field=f"{flat}.same_as", **where)
        return taken(ref, values[flat])

    out = LineDict(file=path, line=getattr(data, "line", None))
    out.lines.update(getattr(data, "lines", {}))
    for key, value in data.items():
        if isinstance(value, dict) and "same_as" in value:
            value = take(value, key, data, key)
        elif isinstance(value, dict) and isinstance(_SCHEMA.get(key), S.NumMap):
            figures = LineDict(file=path, line=getattr(value, "line", None))
            figures.lines.update(getattr(value, "lines", {}))
            figures.update((f, take(v, f"{key}.{f}", value, f) if isinstance(v, dict) and "same_as" in v else v)
                           for f, v in value.items())
            value = figures
        out[key] = value
    return out


def _derived(data, path: str) -> RuntimeSpec:
    """A profile file that names ``base: NAME`` (another release of the same engine, say) and writes only the
    keys that differ: that profile resolved by :func:`_overlay`, the rule an inline what-if dict follows too."""
    names = zoo("runtimes")
    where = data.where("base") if hasattr(data, "where") else {"file": path}
    base = data["base"]
    if not isinstance(base, str) or base not in names:
        raise unknown("base runtime", base, names, field="base", **where)
    return _build(_overlay(load_runtime(base, "base"), data, file=path), path)


#: keys a what-if dict leaves to its base (the profile's identity)
_IDENTITY = ("name", "description", "mode")


def _overlay(base: RuntimeSpec, data, *, file: str | None = None, field: str = "") -> dict:
    """The values of ``base`` with those ``data`` writes over it: one rule for a profile file that names
    ``base:`` (``file``: its path; its numbers need sources, its name and description are its own) and for
    an inline what-if dict (``field``: where the dict was given; the base's name, description and mode hold).

    A key written replaces the base's value. A per-family (``*_on``) or per-model (``*_for``) map merges into
    the base's map figure by figure: a figure written replaces the base's, ``FAMILY: null`` drops it (the
    key's plain value or default holds there), figures not written stay the base's. ``KEY: null`` drops the
    base's setting, every figure of a map, so the key's default holds. A serving limit given outright holds on
    every device (the base's per-family map of it is dropped), as does one unset.
    """
    where = data.where if hasattr(data, "where") else (lambda key=None: {"file": file})
    keys = [k for k in data if k != "base"]
    for key in keys:
        if file is None and (key not in _SCHEMA or key in _IDENTITY):
            raise unknown("runtime key", key, [k for k in _SCHEMA if k not in _IDENTITY], field=_join(field, key))
    unset = [k for k in keys if data[k] is None]
    for key in unset:
        if key not in _SCHEMA or key in _REQUIRED:
            raise unknown("runtime key that may be unset", key,
                          [k for k in _SCHEMA if k not in _REQUIRED], field=_join(field, key), **where(key))
    own = LineDict(file=file, line=getattr(data, "line", None))
    own.lines.update(getattr(data, "lines", {}))
    dropped = []  # `FAMILY: null` in a map
    for key in keys:
        value = data[key]
        kind = _SCHEMA.get(key)
        if isinstance(kind, S.NumMap) and isinstance(value, dict):
            for name in [n for n, v in value.items() if v is None]:
                if name not in kind.keys:
                    raise unknown(f"key of {key}", name, kind.keys, field=_join(field, f"{key}.{name}"),
                                  **(value.where(name) if hasattr(value, "where") else where(key)))
                dropped.append(f"{key}.{name}")
            if any(v is None for v in value.values()):
                kept = LineDict(file=file, line=getattr(value, "line", None))
                kept.lines.update(getattr(value, "lines", {}))
                kept.update((n, v) for n, v in value.items() if v is not None)
                value = kept
        if value is not None:
            own[key] = value
    values, _ = S.check(own, _SCHEMA, path=field, required=("name", "description") if file else (),
                        sources_required=file is not None)
    if field:
        values = {k.removeprefix(f"{field}."): v for k, v in values.items()}
    merged = dict(base.values)
    for key in (*unset, *(k for k in own if k in _LIMITS)):
        prefixes = (f"{key}.", f"{key}_on.") if key in _LIMITS else (f"{key}.",)
        merged = {k: v for k, v in merged.items() if k != key and not k.startswith(prefixes)}
    for key in dropped:
        merged.pop(key, None)
    merged.update(values)
    return merged


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _build(values: dict, path: str) -> RuntimeSpec:
    if values.get("default_zero", 0) not in (0, 1, 2, 3):
        raise InputError(f"must be 0, 1, 2 or 3, got {values['default_zero']!r}", field="default_zero", file=path)
    if values.get("moe_exchange", "all_to_all") not in _EXCHANGES:
        raise unknown("MoE token exchange", values["moe_exchange"], _EXCHANGES, field="moe_exchange", file=path)
    if values["attention"] not in ("flash", "eager"):
        raise unknown("attention kernel", values["attention"], ("flash", "eager"), field="attention", file=path)
    if values.get("dequant_pass_bytes", 0) < 0:
        raise InputError(f"must be >= 0, got {values['dequant_pass_bytes']}", field="dequant_pass_bytes", file=path)
    for key in ("kv_store_gb_s", "hidden_store_gb_s"):
        if key in values and not values[key] > 0:
            raise InputError(f"must be a positive rate, got {values[key]}", field=key, file=path)
    for key in _FRACTIONS:
        if key in values and not 0 <= values[key] <= 1:
            raise InputError(f"must be between 0 and 1, got {values[key]}", field=key, file=path)
    for key, value in values.items():  # keys checked by kind (each family's figure of a ``*_on`` key too)
        name = key.split(".")[0]
        if name in ("moe_dispatch_quantized_on", "fp8_transpose_on") and value not in (0, 1):
            raise InputError(f"must be 0 or 1, got {value}", field=key, file=path)
        if name in _FIXED_COSTS and not value >= 0:
            raise InputError(f"must be >= 0 {'ns' if name.endswith('_ns_on') else 'microseconds'}, got {value}",
                             field=key, file=path)
        if name in _RATES and not 0 < value <= 1:  # shares of a rate: above 0 (they divide), at most all of it
            raise InputError(f"must be in (0, 1], got {value}", field=key, file=path)
        if name.removesuffix("_on") in _LIMITS and not (value >= 1 and float(value).is_integer()):
            raise InputError(f"must be a whole number of at least 1, got {value}", field=key, file=path)
    if values.get("offloaded_kv_attention", "device") not in _KV_ATTENTION:
        raise unknown("offloaded KV attention", values["offloaded_kv_attention"], _KV_ATTENTION,
                      field="offloaded_kv_attention", file=path)
    if values.get("param_gather_reuse_params", 0.0) < 0:
        raise InputError(f"must be at least 0 parameters, got {values['param_gather_reuse_params']}",
                         field="param_gather_reuse_params", file=path)
    if values.get("host_per_seq_us", 0.0) < 0:
        raise InputError(f"must be at least 0, got {values['host_per_seq_us']}", field="host_per_seq_us", file=path)
    for key, value in values.items():
        if key.startswith(("cpu_attention_cache_bytes", "cpu_attention_compute_bytes")) and not 0 < value <= 8:
            raise InputError(f"must be a size in bytes of one element, above 0 and at most 8, got {value}", field=key,
                             file=path)
    traffic = values.get("cpu_attention_traffic", 1.0)
    if traffic < 1.0:
        raise InputError(f"must be at least 1 (bytes moved per cached byte read), got {traffic}",
                         field="cpu_attention_traffic", file=path)
    return RuntimeSpec(name=values["name"], values=MappingProxyType(values))


def load_runtime(ref, field: str = "runtime") -> RuntimeSpec:
    """A zoo name, or a what-if dict ``{base: NAME, KEY: value, ...}`` overriding profile keys."""
    if isinstance(ref, RuntimeSpec):
        return ref
    if isinstance(ref, dict):
        try:
            key = frozen(ref)
        except Unkeyable:
            return _whatif(ref, field)
        hit = _WHATIF_RUNTIMES.get(key)
        if hit is not None and hit[0] is load_runtime(ref.get("base"), f"{field}.base"):
            return hit[1]  # the same dict over the same base profile (its file unchanged)
        spec = _whatif(ref, field)
        _WHATIF_RUNTIMES.put(key, (load_runtime(ref["base"], f"{field}.base"), spec))
        return spec
    return read_once("runtime", _find_runtime, ref, field)


def _find_runtime(ref, field: str) -> RuntimeSpec:
    """:func:`load_runtime` of a zoo name."""
    names = zoo("runtimes")
    if not isinstance(ref, str) or ref not in names:
        raise unknown("runtime", ref, names, field=field)
    return _load(str(names[ref]))


#: what-if runtime dicts, built once per distinct dict and base profile
_WHATIF_RUNTIMES = Memo(256)


def _whatif(ref: dict, field: str) -> RuntimeSpec:
    """A what-if runtime dict ``{base: NAME, KEY: value, ...}``: the base profile with those keys, by the rule
    a profile file that names ``base:`` follows (:func:`_overlay`)."""
    if "base" not in ref:
        raise InputError("a what-if runtime dict needs `base: NAME`", field=field)
    base = load_runtime(ref["base"], f"{field}.base")
    values = _overlay(base, ref, field=field)
    values["name"] = f"{base.name}+" + ",".join(f"{k}={v}" for k, v in ref.items() if k != "base")
    return _build(values, field)
