"""pgvector's ``vector`` type for psycopg: numpy float32 rows in pgvector's binary format.

The binary format (``vector_send``/``vector_recv``) is two big-endian uint16 (dimensions,
unused) followed by big-endian float4s; it is ~4x smaller than the text form and exact.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from psycopg import AsyncConnection
from psycopg.abc import Buffer
from psycopg.adapt import Dumper, Loader
from psycopg.pq import Format

from embedgate.docstore.base import Vector

HEADER = struct.Struct(">HH")
BIG_ENDIAN_F4 = np.dtype(">f4")


def to_binary(vector: Vector) -> bytes:
    row = np.asarray(vector, dtype=BIG_ENDIAN_F4).reshape(-1)
    return HEADER.pack(row.shape[0], 0) + row.tobytes()


def from_binary(data: Buffer) -> Vector:
    dimensions, _ = HEADER.unpack_from(data)
    row = np.frombuffer(data, dtype=BIG_ENDIAN_F4, count=dimensions, offset=HEADER.size)
    return row.astype(np.float32)


class _VectorDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj: Any) -> Buffer:
        return to_binary(obj)


class _VectorLoader(Loader):
    format = Format.BINARY

    def load(self, data: Buffer) -> Vector:
        return from_binary(data)


def register_vector(connection: AsyncConnection[Any], oid: int) -> None:
    """numpy arrays go out as ``vector``; ``vector`` columns read in binary come back as
    float32 arrays. ``oid`` is the database's ``vector`` type, looked up once at open."""
    dumper = type("VectorDumper", (_VectorDumper,), {"oid": oid})
    connection.adapters.register_dumper(np.ndarray, dumper)
    connection.adapters.register_loader(oid, _VectorLoader)
