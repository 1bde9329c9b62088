"""Row ids: UUIDs of version 7 (RFC 9562, section 5.7), in the order they were made.

A B-tree index on random ids (version 4) puts every new row at a random place in it, so each
insert of a batch dirties another page, which SQLite then writes whole to its WAL at the commit
(and PostgreSQL to its WAL after a checkpoint). Ids that grow with time are appended side by
side: measured on SQLite, the worker's database work fell from 195-217 to 154-167 µs per message
and a bulk enqueue rose by about a tenth.

Ids made in the same millisecond are in random order among themselves. 74 random bits keep an
id as unguessable as it needs to be (every read is scoped to its tenant anyway); the first 48
bits are the creation time in milliseconds, which every such row also stores.
"""

from __future__ import annotations

import os
import time
import uuid

__all__ = ["id_at", "new_id"]

_MILLIS = (1 << 48) - 1
_RAND_B = (1 << 62) - 1


def new_id() -> uuid.UUID:
    """A new version-7 UUID for a row."""
    return id_at(time.time_ns() // 1_000_000, os.urandom(10))


def id_at(millis: int, random: bytes) -> uuid.UUID:
    """The version-7 UUID of a Unix time in milliseconds and 10 random bytes (pure): the time
    in the first 48 bits, then the version, 12 random bits, the variant and 62 random bits."""
    if len(random) != 10:
        raise ValueError("id_at takes 10 random bytes")
    bits = int.from_bytes(random, "big")
    value = (
        (millis & _MILLIS) << 80
        | 0x7 << 76
        | (bits >> 62 & 0xFFF) << 64
        | 0b10 << 62
        | bits & _RAND_B
    )
    return uuid.UUID(int=value)
