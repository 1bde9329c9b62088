"""The outbox's state machine: the closed set of message states and who moves a message where.

The states are :class:`mailconnect.store.MessageState` (stored as text with a CHECK)::

    enqueue ──► queued ──claim──► sending ──► sent | partially_sent | failed      (final)
       │          ▲  ▲               │
       │          │  │               ├──► deferred ──(next_attempt_at)──► claimed again
       │          │  │               │        └──(no retry before expires_at)──► expired (final)
       │          │  │               ├──► held       (login / permission: a person acts)
       │          │  │               ├──► uncertain  (lost after the final "."; not resent)
       │          │  └─release unsent / worker died before DATA (back to ``claimed_from``)
       │          └──── retry (failed, expired, uncertain, held) · release_held (held)
       └──► held   when the connection already needs attention
    cancel: queued, deferred, held ──► cancelled (final)

``sending`` always carries a lease (``lease_owner``, ``lease_until``) that the worker renews. A
message whose lease ran out is recovered by any worker: back to the state it was claimed from,
unless an attempt was opened for it (the worker was about to send DATA or sending it), in which
case it becomes ``uncertain``: see :mod:`mailconnect.outbox.claim`.

Recipients (:class:`~mailconnect.store.RecipientState`): ``pending`` until a server answers for
them; ``accepted`` once the reply to the final "." was 250 (final, never sent to again);
``rejected`` on a permanent refusal (final); ``deferred`` on a temporary one (tried again).
"""

from __future__ import annotations

from mailconnect.store.states import MessageState

__all__ = ["ACTIVE", "CANCELLABLE", "CLAIMABLE", "RETRYABLE", "MessageState"]

# Waiting for a worker (with ``next_attempt_at``); ``uncertain`` only with resend_uncertain.
CLAIMABLE = (MessageState.QUEUED, MessageState.DEFERRED)
# An explicit retry puts these back in the queue.
RETRYABLE = frozenset(
    {MessageState.FAILED, MessageState.EXPIRED, MessageState.UNCERTAIN, MessageState.HELD}
)
CANCELLABLE = frozenset({MessageState.QUEUED, MessageState.DEFERRED, MessageState.HELD})
# Not finished: a worker will or may still act on them.
ACTIVE = frozenset(
    {MessageState.QUEUED, MessageState.SENDING, MessageState.DEFERRED, MessageState.HELD}
)
