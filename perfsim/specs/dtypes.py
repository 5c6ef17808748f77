"""Numeric formats: names and storage sizes."""

from __future__ import annotations

from perfsim.errors import unknown

#: bytes per element of each format perfsim knows
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "tf32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "fp4": 0.5,
    "int4": 0.5,
}

#: formats a model may compute in (tf32 is a tensor-core mode of fp32 storage)
COMPUTE_DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "fp4", "int8", "int4")


def check_dtype(value, field: str = "dtype") -> str:
    """Return ``value`` if it names a known format, else raise :class:`~perfsim.InputError`."""
    if value not in DTYPE_BYTES:
        raise unknown("dtype", value, DTYPE_BYTES, field=field)
    return value
