"""Unit scales shared by every layer: spec fields carry their unit in the name (``_gib``, ``_gb_s``,
``_us``); columns hold SI values (bytes, B/s, s, W, J)."""

GIB = 2.0**30  # bytes in a GiB (capacities: hbm_capacity_gib, host_memory_gib)
GB = 1e9  # bytes in a GB (bandwidths: *_gb_s, nccl-tests convention)
