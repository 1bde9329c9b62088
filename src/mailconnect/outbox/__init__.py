"""The durable outbox and its delivery worker.

An application enqueues messages (:func:`enqueue`, :func:`enqueue_many`); they are rendered
once, stored, and committed before enqueue returns (or inside the caller's transaction). Workers
(:func:`run_worker`) claim due messages with a lease, group them by connection and send each
group through one SMTP session to the tenant's own server, within the provider's limits. Every
attempt is recorded with its reply and a redacted transcript (:func:`get_message`).

Guarantees
    * A message acknowledged by enqueue is never lost: a worker killed at any moment leaves
      leases that run out, and the messages come back.
    * A message is sent twice only if it was ``uncertain``: the connection was lost after its
      final "." left this machine and before the reply, or its worker died between writing
      the attempt rows of its window (``run_worker(window=...)``) and storing their results.
      Uncertain messages are never resent unless asked (``resend_uncertain``, :func:`retry`).
    * A recipient that accepted a message is never sent it again.
    * Login and permission failures hold the connection's messages instead of retrying into an
      account lockout; :func:`release_held` resumes them.

States: :mod:`mailconnect.outbox.states`. Modules: ``box`` (:class:`Outbox`), ``enqueue``,
``claim`` (leases, recovery), ``policy`` (pure decisions), ``limits`` (shared rate and session
limits), ``delivery`` (the SMTP session), ``records``
(what an attempt writes), ``groupcommit`` (concurrent writes share a commit), ``worker``,
``views``, ``manage``, ``retention`` (purging finished messages), ``wakeup`` (notifications).
"""

from mailconnect.outbox.box import DEFAULT_MAX_MESSAGE_SIZE, Outbox, Timeouts
from mailconnect.outbox.enqueue import Enqueued, EnqueueItem, enqueue, enqueue_many
from mailconnect.outbox.limits import ConnectionLimits, resolve_limits
from mailconnect.outbox.manage import cancel, release_held, retry
from mailconnect.outbox.policy import RetryPolicy, Verdict
from mailconnect.outbox.retention import PURGEABLE, Purged, purge_finished
from mailconnect.outbox.states import CANCELLABLE, CLAIMABLE, RETRYABLE
from mailconnect.outbox.views import (
    AttemptView,
    MessageView,
    RecipientView,
    count_messages,
    get_message,
    list_messages,
)
from mailconnect.outbox.worker import (
    DEFAULT_WINDOW,
    EventKind,
    WorkerEvent,
    WorkerStats,
    default_worker_id,
    run_once,
    run_worker,
)
from mailconnect.store.states import AttemptOutcome, MessageState, RecipientState

__all__ = [
    "CANCELLABLE",
    "CLAIMABLE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_WINDOW",
    "PURGEABLE",
    "RETRYABLE",
    "AttemptOutcome",
    "AttemptView",
    "ConnectionLimits",
    "EnqueueItem",
    "Enqueued",
    "EventKind",
    "MessageState",
    "MessageView",
    "Outbox",
    "Purged",
    "RecipientState",
    "RecipientView",
    "RetryPolicy",
    "Timeouts",
    "Verdict",
    "WorkerEvent",
    "WorkerStats",
    "cancel",
    "count_messages",
    "default_worker_id",
    "enqueue",
    "enqueue_many",
    "get_message",
    "list_messages",
    "purge_finished",
    "release_held",
    "resolve_limits",
    "retry",
    "run_once",
    "run_worker",
]
