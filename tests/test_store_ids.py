"""store.ids: version-7 UUIDs, in the order they were made."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from sqlalchemy import select
from tests.support.sinks import OutboxEnv, outbox_env

from mailconnect.outbox import enqueue_many
from mailconnect.store import Attempt
from mailconnect.store.ids import id_at, new_id

__all__ = ["outbox_env"]

_MILLIS = st.integers(min_value=0, max_value=(1 << 48) - 1)
_RANDOM = st.binary(min_size=10, max_size=10)


@given(_MILLIS, _RANDOM)
def test_an_id_is_a_version_7_uuid_that_carries_its_time(millis: int, random: bytes) -> None:
    made = id_at(millis, random)
    assert made.version == 7
    assert made.variant == uuid.RFC_4122
    assert made.int >> 80 == millis
    assert uuid.UUID(str(made)) == made  # survives the text form both databases store


@given(_MILLIS, _MILLIS, _RANDOM, _RANDOM)
def test_ids_sort_by_time_as_numbers_and_as_hex_text(
    first: int, second: int, random_a: bytes, random_b: bytes
) -> None:
    """PostgreSQL compares the 16 bytes, SQLite the 32 hex digits: both follow the time."""
    assume(first != second)
    earlier, later = sorted((first, second))
    a, b = id_at(earlier, random_a), id_at(later, random_b)
    assert a < b
    assert a.hex < b.hex


@given(_MILLIS, _RANDOM, _RANDOM)
def test_ids_of_one_millisecond_differ_by_their_random_bits(
    millis: int, random_a: bytes, random_b: bytes
) -> None:
    assert (id_at(millis, random_a) == id_at(millis, random_b)) == (
        _used(random_a) == _used(random_b)
    )


def _used(random: bytes) -> int:
    """The 74 of the 80 random bits an id keeps (12 then 62)."""
    bits = int.from_bytes(random, "big")
    return (bits >> 62 & 0xFFF) << 62 | bits & ((1 << 62) - 1)


def test_new_ids_are_unique_and_grow_from_one_millisecond_to_the_next() -> None:
    made = [new_id() for _ in range(20_000)]
    assert len(set(made)) == len(made)
    stamps = [one.int >> 80 for one in made]
    assert stamps == sorted(stamps)


def test_the_random_part_must_be_ten_bytes() -> None:
    with pytest.raises(ValueError, match="10 random bytes"):
        id_at(0, b"short")


async def test_stored_rows_get_version_7_ids(outbox_env: OutboxEnv) -> None:
    """The tenant, the connection, the message and its attempt all get ids from new_id."""
    env = outbox_env
    connection = env.connection(9)  # nothing listens on port 9 of 127.0.0.1: one failed try
    (enqueued,) = enqueue_many(env.outbox, tenant_id=env.tenant_id, messages=[env.message()])
    await env.run()
    with env.outbox.reading() as session:
        attempts = session.scalars(select(Attempt.id).where(Attempt.message_id == enqueued.id))
        attempt_ids = list(attempts)
    assert attempt_ids
    ids = [env.tenant_id, connection, enqueued.id, *attempt_ids]
    assert [made.version for made in ids] == [7] * len(ids)
