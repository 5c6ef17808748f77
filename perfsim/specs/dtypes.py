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

#: extra bytes per element for the block scales a 4-bit format carries when stored: int4 weights
#: as AWQ/GPTQ keep them (groups of 128 with an fp16 scale and a packed 4-bit zero point:
#: 2.5 B / 128), fp4 as the OCP Microscaling format (MXFP4: blocks of 32 with one 8-bit scale)
BLOCK_SCALE_BYTES: dict[str, float] = {"int4": 2.5 / 128.0, "fp4": 1.0 / 32.0}


def storage_bytes(dtype: str) -> float:
    """Bytes per stored element of ``dtype``, block scales included.

    >>> storage_bytes("bf16"), storage_bytes("int4")
    (2.0, 0.51953125)
    """
    return DTYPE_BYTES[dtype] + BLOCK_SCALE_BYTES.get(dtype, 0.0)


#: formats a model may compute in (tf32 is a tensor-core mode of fp32 storage)
COMPUTE_DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "fp4", "int8", "int4")


def check_dtype(value, field: str = "dtype") -> str:
    """Return ``value`` if it names a known format, else raise :class:`~perfsim.InputError`."""
    if not isinstance(value, str) or value not in DTYPE_BYTES:
        raise unknown("dtype", value, DTYPE_BYTES, field=field)
    return value
