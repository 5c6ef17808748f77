"""Declared schema of the numeric columns ``c`` that every cost function reads.

:func:`perfsim.plan.columns.build` turns a :class:`~perfsim.plan.grid.Grid` (one row per
configuration) into a dict ``c`` of numeric columns, one entry per name below. Each column is a
NumPy array that broadcasts over the grid's configurations, or a plain scalar where the arguments
it comes from take a single value. Units are SI (bytes, seconds, watts, joules, FLOP), whatever the
spec files say in their key names (GB/s, GiB, us, pJ/B); the exceptions say so in their unit.

Units: ``"1"`` a dimensionless count or ratio, ``"bool"`` a 0/1 flag, ``"enum"`` an integer code
(the meaning names the codes). A ``B`` column of a per-element size is bytes per element. NaN
marks an optional argument that was not given, as the meaning says.

Sources: the model spec (:meth:`perfsim.specs.model.ModelSpec.columns`), the hardware spec
(``_HW`` and the dtype-dependent rates in :mod:`perfsim.plan.columns`), device kinds and PIM
(:func:`perfsim.plan.devices.device_columns`), the runtime profile
(:meth:`perfsim.specs.runtime.RuntimeSpec.columns`), offload placement
(:func:`perfsim.plan.offload.offload_columns`) and the plan arguments (:mod:`perfsim.plan.grid`).
``tests/test_column_schema.py`` checks this table against what ``build`` produces, both ways.
"""

from __future__ import annotations

from dataclasses import dataclass

#: units a column may have
UNITS = ("B", "B/s", "s", "us", "W", "J", "J/B", "FLOP", "FLOP/s", "GHz", "1", "bool", "enum")


@dataclass(frozen=True)
class Column:
    """One numeric column of ``c``: its ``name``, ``unit`` (one of :data:`UNITS`), ``meaning`` in one line."""

    name: str
    unit: str
    meaning: str


_C = Column

COLUMNS = (
    # --- model (ModelSpec.columns) ---------------------------------------------------------------
    _C("hidden", "1", "hidden size (model width)"),
    _C("layers", "1", "transformer layers"),
    _C("heads", "1", "attention (query) heads"),
    _C("kv_heads", "1", "key/value heads (GQA/MQA groups; = heads for MHA)"),
    _C("head_dim", "1", "dimension of one head (MLA: qk_nope + qk_rope)"),
    _C("ffn", "1", "intermediate size of the dense MLP"),
    _C("vocab", "1", "vocabulary size"),
    _C("gated", "bool", "gated MLP (SwiGLU/GeGLU: three matrices instead of two)"),
    _C("tied", "bool", "LM head shares the embedding matrix"),
    _C("pos_rows", "1", "rows of a learned position embedding (0 for RoPE/ALiBi)"),
    _C("attn_bias", "bool", "attention projections carry biases"),
    _C("mlp_bias", "bool", "MLP projections carry biases"),
    _C("head_bias", "bool", "LM head carries a bias"),
    _C("norm_params", "1", "parameters per hidden element of one norm (2 layernorm, 1 rmsnorm)"),
    _C("parallel_block", "bool", "attention and MLP run in parallel off one norm (GPT-J style)"),
    _C("embed_norm", "bool", "a norm right after the embedding (BLOOM)"),
    _C("experts", "1", "routed experts per MoE layer (0: dense model)"),
    _C("top_k", "1", "routed experts per token (0: dense model)"),
    _C("moe_ffn", "1", "intermediate size of one expert (0: dense model)"),
    _C("shared_experts", "1", "always-active shared experts per MoE layer"),
    _C("dense_layers", "1", "leading layers with a dense MLP (all layers of a dense model)"),
    _C("q_lora", "1", "MLA query low-rank dimension (0: none)"),
    _C("kv_lora", "1", "MLA compressed KV latent dimension (0: not MLA)"),
    _C("qk_nope", "1", "MLA per-head query/key dimension without RoPE"),
    _C("qk_rope", "1", "MLA per-head query/key dimension with RoPE (shared rope key)"),
    _C("v_head_dim", "1", "MLA per-head value dimension"),
    # --- hardware (_HW table and dtype-dependent rates in plan/columns.py) -----------------------
    _C("units", "1", "compute units (SMs / CUs / TensorCores): waves of GEMM tiles"),
    _C("tile_m", "1", "GEMM output tile rows per compute unit (tile and wave quantisation)"),
    _C("tile_n", "1", "GEMM output tile columns per compute unit"),
    _C("hbm_bw", "B/s", "peak device-memory bandwidth (what-if hbm_bandwidth_gb_s)"),
    _C("capacity_bytes", "B", "device-memory capacity (what-if hbm_capacity_gib)"),
    _C("device_launch_s", "s", "the device's fixed cost per kernel (launch + ramp)"),
    _C("memory_max", "1", "fraction of hbm_bw a streaming kernel reaches"),
    _C("tdp_w", "W", "board power limit: a GPU's clock drops to stay within it, TPU/NPU power is clipped at it (what-if tdp_w)"),
    _C("idle_w", "W", "powered, idle device"),
    _C("active_w", "W", "floor added while kernels run at the top clock (SMs, L2, crossbar clocked)"),
    _C("matrix_w", "W", "matrix engines' dynamic power at the full dense rate"),
    _C("memory_j_per_byte", "J/B", "energy per byte of device-memory traffic"),
    _C("link_j_per_byte", "J/B", "energy per byte sent over the scale-up/scale-out fabric"),
    _C("voltage_floor", "1", "core voltage at the lowest V/f point over the top-clock voltage (power caps)"),
    _C("clock_ghz", "GHz", "boost clock"),
    _C("min_clock_ghz", "GHz", "lowest clock a power cap may set (0: unbounded)"),
    _C("devices_per_node", "1", "devices in one node / scale-up domain (what-if devices_per_node)"),
    _C("package_devices", "1", "devices sharing one package (MI250X: 2 GCDs)"),
    _C("package_bw", "B/s", "in-package link between those devices, per device, per direction (0: none)"),
    _C("scaleup_bw", "B/s", "scale-up fabric (NVLink, xGMI, ICI), per device, per direction"),
    _C("scaleup_eff", "1", "fraction of scaleup_bw a large ring collective reaches"),
    _C("scaleup_lat_s", "s", "scale-up latency per ring step"),
    _C("scaleup_ll_s", "s", "scale-up latency per step of the low-latency (LL) protocol (0: none)"),
    _C("nvls_eff", "1", "efficiency of in-switch (NVLS/SHARP) all-reduce (0: no in-network reduction)"),
    _C("scaleout_bw", "B/s", "inter-node NIC bandwidth per device, per direction"),
    _C("scaleout_eff", "1", "fraction of scaleout_bw a large ring collective reaches"),
    _C("scaleout_lat_s", "s", "scale-out latency per ring step"),
    _C("scaleout_ll_s", "s", "scale-out latency per step of the low-latency (LL) protocol (0: none)"),
    _C("host_link_bw", "B/s", "device-host link (PCIe, C2C), per device, per direction"),
    _C("host_link_eff", "1", "fraction of host_link_bw a large pinned copy reaches"),
    _C("host_memory_bytes", "B", "host memory per node (the cpu offload tier)"),
    _C("nvme_bw", "B/s", "NVMe read bandwidth per node (the nvme offload tier)"),
    _C("nvme_write_bw", "B/s", "NVMe write bandwidth per node (0: writes at nvme_bw)"),
    _C("nvme_capacity_bytes", "B", "NVMe capacity per node (0: unchecked)"),
    _C("nvme_direct", "bool", "NVMe reaches device memory directly (GPUDirect Storage), else via host memory"),
    _C("cpu_flops", "FLOP/s", "host CPUs' fp32 rate per node (CPU Adam, host attention)"),
    _C("cpu_bw", "B/s", "host memory bandwidth per node"),
    _C("cpu_mem_eff", "1", "fraction of cpu_bw a streaming kernel reaches"),
    _C("thread_copy_bw", "B/s", "bytes/s one host thread copies in memory (0: unknown)"),
    _C("host_w", "W", "host (CPUs, memory, switches, NICs, fans) at full load, per node, DC side"),
    _C("host_cpu_w", "W", "part of host_w the CPUs add only while they compute for the run"),
    _C("host_nvme_w", "W", "part of host_w the NVMe drives add only while they move the run's bytes"),
    _C("host_nic_w", "W", "part of host_w the NICs add only while they carry scale-out bytes"),
    _C("psu_efficiency", "1", "power-supply efficiency (DC over wall power)"),
    _C("peak_flops", "FLOP/s", "dense matrix rate in dtype (NaN: no tensor rate for it; what-if peak_tflops)"),
    _C("gemm_max", "1", "fraction of peak_flops a large, well-shaped GEMM reaches in dtype"),
    _C("attn_peak_ratio", "1", "peak rate of the attention core's 16-bit format over peak_flops"),
    _C("attn_gemm_max", "1", "gemm_max of the attention core's 16-bit format"),
    _C("vector_flops", "FLOP/s", "non-matrix (SIMD / CUDA-core) rate, best dtype (NaN: not given)"),
    # --- device kinds, NPU engines, PIM, placement (plan/devices.py) -----------------------------
    _C("main_kind", "enum", "kind of the main device: 0 gpu, 1 npu, 2 tpu, 3 pim, 4 cpu"),
    _C("systolic", "bool", "NPU/TPU: GEMMs run on systolic arrays"),
    _C("arrays", "1", "systolic arrays of the matrix engine"),
    _C("array_size", "1", "edge of one systolic array in MACs"),
    _C("weight_stationary", "bool", "systolic dataflow is weight-stationary (else output-stationary)"),
    _C("vector_w", "W", "vector engine's dynamic power at its full rate (NPU/TPU)"),
    _C("has_pim", "bool", "the hardware has PIM memory"),
    _C("pim_device", "bool", "the device itself is a PIM device (kind pim)"),
    _C("pim_flops", "FLOP/s", "PIM bank-level compute rate (0: no PIM)"),
    _C("pim_bw", "B/s", "bandwidth inside the PIM banks, all banks together"),
    _C("pim_eff", "1", "fraction of the PIM bank rate a long GEMV reaches"),
    _C("pim_capacity_bytes", "B", "PIM memory capacity"),
    _C("pim_link_bw", "B/s", "host-to-PIM link, per direction (0: PIM is the device's own memory)"),
    _C("pim_j_per_byte", "J/B", "energy per byte read inside a PIM bank"),
    _C("pim_concurrent", "bool", "the spec's PIM mode overlaps host memory traffic and PIM commands"),
    _C("pim_args", "1", "how many of pim_mode, sub_batches were given (0-2; need PIM hardware)"),
    _C("pim_blocked", "bool", "resolved PIM mode is blocked (host traffic and PIM take turns)"),
    _C("sub_batches", "1", "NPU+PIM sub-batches interleaved (given, else 2 when concurrent, 1 when blocked)"),
    _C("sub_batches_auto", "bool", "sub_batches not given on a concurrent system: 2 only where faster"),
    _C("place_decode_attention", "bool", "place puts decode attention on PIM"),
    _C("place_prefill_attention", "bool", "place puts prefill attention on PIM"),
    _C("place_mlp", "bool", "place puts the MLP on PIM"),
    _C("place_pim", "bool", "place puts any op group on PIM"),
    _C("place_wrong_kind", "bool", "place names the main device by another kind than the hardware's"),
    # --- runtime profile (RuntimeSpec.columns, resolved per mode and family in build) -------------
    _C("step_overhead_s", "s", "engine's host overhead per step / iteration"),
    _C("host_per_seq_s", "s", "engine's host time per sequence of an inference iteration, not hidden by the device"),
    _C("max_num_seqs", "1", "engine's default limit on sequences per serving iteration (NaN: none given)"),
    _C("max_num_batched_tokens", "1", "engine's default token budget per serving iteration (NaN: none given)"),
    _C("runtime_launch_us", "us", "engine's kernel launch cost in microseconds (-1: the device's own)"),
    _C("launch_s", "s", "cost per kernel: runtime_launch_us where set, else device_launch_s"),
    _C("kernels_per_layer", "1", "elementwise kernels one layer runs (fusion; compiled count with compile)"),
    _C("elementwise_traffic", "1", "elementwise-op memory traffic relative to fused kernels (eager > 1)"),
    _C("flash", "bool", "flash attention (no materialised score matrix), else eager"),
    _C("attention_eff", "1", "attention kernels' share of the GEMM ceiling on long calls, for this device's family"),
    _C("moe_gemm_eff", "1", "the engine's fused MoE expert GEMMs' share of the GEMM ceiling, for this device's family"),
    _C("moe_memory_eff", "1", "their share of memory_max streaming the expert weights, for this device's family"),
    _C("moe_all_gather", "1", "1: an expert group over data-parallel ranks all-gathers tokens and reduce-scatters outputs"),
    _C("moe_a2a_domain", "1", "scale-up domains of at least this many devices keep the all-to-all (inf: none)"),
    _C("moe_dispatch_q", "1", "1: the tokens sent to the experts' ranks move in the compute format (else 16-bit), for this device's family"),
    _C("attention_eff_volta", "1", "attention_eff on volta devices"),
    _C("attention_eff_turing", "1", "attention_eff on turing devices"),
    _C("attention_eff_ampere", "1", "attention_eff on ampere devices"),
    _C("attention_eff_hopper", "1", "attention_eff on hopper devices"),
    _C("attention_eff_blackwell", "1", "attention_eff on blackwell devices"),
    _C("attention_eff_cdna2", "1", "attention_eff on cdna2 devices"),
    _C("attention_eff_cdna3", "1", "attention_eff on cdna3 devices"),
    _C("attention_eff_tpu", "1", "attention_eff on tpu devices"),
    _C("attention_eff_npu", "1", "attention_eff on npu devices"),
    _C("attention_eff_pim", "1", "attention_eff on pim devices"),
    _C("attention_eff_other", "1", "attention_eff on devices of no listed family"),
    _C("attention_bwd_ratio", "1", "attention backward kernel's rate over the forward's, for this device's family"),
    _C("grad_bytes", "B", "bytes per gradient element in the gradient buffer and the data-parallel reduction"),
    _C("gathers_per_layer", "1", "all-gathers a fully sharded (ZeRO-3) engine issues per layer and pass"),
    _C("grad_bucket_params", "1", "parameters per gradient-reduction bucket (0: the whole buffer in one collective)"),
    _C("grad_bucket_per_rank", "1", "parameters per bucket added per data-parallel rank (the bucket is the larger)"),
    _C("main_grad_bytes", "B", "bytes per sharded parameter of the fp32 gradient copy an fp16 engine's optimizer holds"),
    _C("dp_overlap", "1", "share of the gradient reduction hidden behind backward compute"),
    _C("tp_overlap", "1", "share of tensor-parallel communication hidden behind compute"),
    _C("dropout", "bool", "training keeps dropout masks (activation memory and traffic)"),
    _C("fragmentation", "1", "allocator overhead as a fraction of activation memory"),
    _C("default_zero", "enum", "engine's ZeRO stage when zero is not given (0-3)"),
    _C("default_sp", "bool", "engine runs sequence parallelism with TP when sp is not given"),
    _C("loss_bytes", "B", "bytes the loss holds per token and vocabulary entry at its peak (4: fp32 logits)"),
    _C("sac_matmuls", "1", "selective recompute: share of matmuls recomputed (0: attention core only)"),
    _C("offload_prefetch", "1", "share of the next layer's offload transfer hidden behind compute"),
    _C("decode_prefetch", "1", "offload_prefetch in a decode step (default the same)"),
    _C("cpu_attention", "enum", "attention over an offloaded KV cache: 0 device, 1 host CPU, 2 the faster"),
    _C("cpu_attention_traffic", "1", "host-memory bytes moved per cached KV byte by host attention"),
    _C("cpu_attention_expands_kv", "bool", "host attention copies grouped KV heads to every query head"),
    _C("host_pinned", "bool", "host buffers are pinned (pageable copies are staged by the host thread)"),
    _C("kv_pinned", "bool", "the KV cache's host buffer is pinned (else its copies are staged)"),
    _C("driver_staging", "bool", "pageable copies are staged by the CUDA driver on one host thread"),
    _C("kv_store_bw", "B/s", "rate the engine stores the KV cache into host memory (0: at the link's)"),
    _C("dequant_pass_bytes", "B", "device-memory bytes per weight of a separate dequantisation pass (0: fused)"),
    _C("hidden_store_bw", "B/s", "rate the engine stores offloaded hidden states (0: at the link's)"),
    _C("block_schedule", "bool", "offloaded batch runs as GPU batches of a block (FlexGen zig-zag)"),
    # --- offload placement (plan/offload.py): the device keeps the rest --------------------------
    _C("w_frac_cpu", "1", "share of the weights in host memory"),
    _C("w_frac_nvme", "1", "share of the weights on NVMe"),
    _C("opt_frac_cpu", "1", "share of the optimizer states in host memory"),
    _C("opt_frac_nvme", "1", "share of the optimizer states on NVMe"),
    _C("grad_frac_cpu", "1", "share of the gradients in host memory"),
    _C("grad_frac_nvme", "1", "share of the gradients on NVMe"),
    _C("act_frac_cpu", "1", "share of the parked activations in host memory"),
    _C("act_frac_nvme", "1", "share of the parked activations on NVMe"),
    _C("kv_frac_cpu", "1", "share of the KV cache in host memory"),
    _C("kv_frac_nvme", "1", "share of the KV cache on NVMe"),
    _C("exp_frac_cpu", "1", "share of the routed experts in host memory (default w_frac_cpu)"),
    _C("exp_frac_nvme", "1", "share of the routed experts on NVMe (default w_frac_nvme)"),
    _C("w_auto", "bool", "offload_weights auto: the placement is searched (perfsim.analytical.evaluate)"),
    _C("kv_auto", "bool", "offload_kv auto: the placement is searched"),
    _C("act_auto", "bool", "offload_activations auto: the placement is searched"),
    _C("exp_given", "bool", "offload_experts given for an MoE model (an expert cache)"),
    _C("offloaded", "bool", "any state leaves the device"),
    # --- plan arguments (plan/grid.py, derived in build) ------------------------------------------
    _C("train", "bool", "mode is train (else inference)"),
    _C("tp", "1", "tensor-parallel degree"),
    _C("pp", "1", "pipeline-parallel degree"),
    _C("default_engine", "enum", "engine of the row: -1 named by runtime, else plan.columns.ENGINE_DEFAULTS index "
       "(0 the mode's default, 1 FSDP's, 2 offloading's, 3 the TPU's training engine)"),
    _C("scaleup_domain", "1", "devices one scale-up fabric joins (an ICI slice, an NVL72 rack); 0: devices_per_node"),
    _C("torus_dims", "1", "dimensions of a torus scale-up fabric (TPU ICI); 0: switched, every group at full bandwidth"),
    _C("stage_layers", "1", "layers on the fullest pipeline stage (ceil(layers / pp), or the largest pp_layers count)"),
    _C("pp_layers_stages", "1", "stages an explicit pp_layers lists (NaN: balanced split)"),
    _C("pp_layers_total", "1", "layers an explicit pp_layers adds up to (NaN: balanced split)"),
    _C("cp", "1", "context-parallel degree"),
    _C("ep", "1", "expert-parallel degree"),
    _C("dp", "1", "data-parallel degree (given, else num_devices / (tp x pp x cp), else 1)"),
    _C("num_devices", "1", "devices of the whole run (given, else tp x pp x cp x dp)"),
    _C("sp", "bool", "sequence parallelism with TP (as given, else the engine's default_sp)"),
    _C("virtual_stages", "1", "model chunks per device of the interleaved schedule"),
    _C("schedule", "enum", "pipeline schedule: 0 gpipe, 1 1f1b, 2 interleaved, 3 zero-bubble, 4 dualpipe"),
    _C("recompute", "enum", "activation recomputation: 0 none, 1 selective, 2 full, 3 auto (resolved per row)"),
    _C("zero", "enum", "ZeRO stage 0-3 (given, else default_zero)"),
    _C("zero_shard_size", "1", "ranks per ZeRO sharding group (default dp x cp)"),
    _C("seq_len", "1", "training: tokens per sequence"),
    _C("global_batch", "1", "training: sequences per step (default 8 x dp)"),
    _C("micro_batch", "1", "training: sequences per micro-batch (1 when not given)"),
    _C("gpu_batch", "1", "offloaded inference: GPU batch of a block (micro_batch; NaN: the whole batch)"),
    _C("batch", "1", "inference: concurrent sequences of the whole system"),
    _C("prompt_len", "1", "inference: prompt tokens per sequence"),
    _C("gen_len", "1", "inference: generated tokens per sequence"),
    _C("lora", "bool", "finetune is lora (adapters on frozen weights)"),
    _C("lora_rank", "1", "rank of the LoRA adapters"),
    _C("train_tokens", "1", "tokens of the whole training job (NaN: one step)"),
    _C("capacity_factor", "1", "MoE expert buffer over the balanced share (NaN: dropless)"),
    _C("expert_hit_rate", "1", "share of routed experts found on the device (NaN: its share)"),
    _C("gpu_memory_utilization", "1", "inference: share of device memory the engine may use"),
    _C("power_cap_w", "W", "per-device power cap (NaN: none; a GPU's board limit tdp_w caps it anyway)"),
    _C("wall_whole_node", "bool", "wall energy charges whole servers (else the devices' share of them)"),
    _C("pue", "1", "facility energy over IT energy"),
    _C("act_bytes", "B", "bytes per activation element between kernels (at least 2)"),
    _C("compute_bytes", "B", "bytes per GEMM input element in dtype (fp8: 1)"),
    _C("w_bytes", "B", "bytes per stored weight (weight_dtype, else dtype; block scales included)"),
    _C("kv_bytes", "B", "bytes per stored KV-cache element (kv_dtype, else dtype; block scales included)"),
    _C("dequant", "bool", "weights stored in another format than dtype are converted in the GEMM kernel"),
)

#: name -> column
BY_NAME = {c.name: c for c in COLUMNS}
