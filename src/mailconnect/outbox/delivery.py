"""One SMTP session per connection, reused for a batch of messages.

The session is opened once (resolve once through the network guard and pin the address, TCP,
greeting, EHLO, STARTTLS and EHLO again, AUTH) and then carries message after message: MAIL
FROM, one RCPT TO per recipient not yet done, DATA. RSET is sent before a message only when the
previous transaction did not end with a reply to its final "." (RFC 5321 4.1.1.4: that reply
already resets the server's state), so a clean run costs no extra round trip.

Messages go through in windows (:meth:`SmtpRun.deliver_window`): the attempt rows of a window
are committed before its first MAIL and the results after its last reply, so a window of
messages shares two commits; see docs/outbox.md for what this does to the crash rule.

With PIPELINING offered, MAIL, RCPT and DATA go out in one write
(:meth:`~mailconnect.smtp.SmtpSession.transaction`); the replies are judged exactly as those of
the commands sent one at a time.

What each failure does is decided in :mod:`mailconnect.outbox.policy`; what is written, in
:mod:`mailconnect.outbox.records`.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from mailconnect.compose import has_bare_cr_or_lf
from mailconnect.crypto import Secret
from mailconnect.diagnosis import Stage
from mailconnect.errors import ConfigurationError, SecretError
from mailconnect.netguard import GuardPolicy, PinnedTarget, Resolver, TargetUnreachable
from mailconnect.netguard import resolve_and_check as netguard_resolve
from mailconnect.outbox.box import Outbox
from mailconnect.outbox.claim import Claimed
from mailconnect.outbox.limits import ConnectionLimits, resolve_limits, scope_of
from mailconnect.outbox.policy import (
    Judgement,
    Verdict,
    enhanced_code,
    judge_failure,
    judge_reply,
    next_attempt,
    settle,
)
from mailconnect.outbox.records import (
    AttemptRecord,
    Finished,
    Opening,
    Outgoing,
    RecipientUpdate,
    Settlement,
    discard_attempts,
    expire_claimed,
    finish_many,
    hold_connection,
    load_outgoing_many,
    open_attempts_many,
)
from mailconnect.settings import AuthMethod, ConnectionSettings, Security
from mailconnect.smtp import (
    Capabilities,
    Reply,
    SessionError,
    SmtpSession,
    TlsPolicy,
    connect_pinned,
)
from mailconnect.store.connections import require_connection
from mailconnect.store.credentials import load_secret
from mailconnect.store.states import (
    AttemptOutcome,
    ConnectionStatus,
    MessageState,
    RecipientState,
    SecretPurpose,
)
from mailconnect.store.types import utcnow

__all__ = ["ConnectionPlan", "Delivered", "DeliveryContext", "SmtpRun", "load_plan"]

Db = Callable[..., Awaitable[Any]]
_QUIT_SECONDS = 5.0
_OPEN_RECIPIENTS = (RecipientState.PENDING, RecipientState.DEFERRED)


@dataclass(frozen=True, slots=True)
class ConnectionPlan:
    """What a session needs to know about its connection, read once per session."""

    tenant_id: uuid.UUID
    connection_id: uuid.UUID
    settings: ConnectionSettings
    status: ConnectionStatus
    limits: ConnectionLimits
    scope: str
    status_reason: str | None = None
    secret: Secret | None = field(default=None, repr=False)
    problem: str | None = None  # why it cannot log in as configured (a hold reason)


def load_plan(
    session: Session, outbox: Outbox, tenant_id: uuid.UUID, connection_id: uuid.UUID
) -> ConnectionPlan:
    connection = require_connection(session, tenant_id, connection_id)
    settings = connection.settings
    secret: Secret | None = None
    problem: str | None = None
    if settings.auth is not AuthMethod.NONE:
        purpose = (
            SecretPurpose.OAUTH_ACCESS_TOKEN
            if settings.auth is AuthMethod.OAUTH2
            else SecretPurpose.PASSWORD
        )
        try:
            secret = load_secret(session, outbox.keyring, tenant_id, connection_id, purpose)
        except SecretError as exc:
            problem = f"the stored {purpose.value.replace('_', ' ')} cannot be used: {exc}"
        else:
            if secret is None:
                problem = f"no {purpose.value.replace('_', ' ')} is stored for the connection"
        if not settings.username:
            problem = "the connection logs in but has no username"
    return ConnectionPlan(
        tenant_id=tenant_id,
        connection_id=connection_id,
        settings=settings,
        status=connection.status,
        limits=resolve_limits(connection),
        scope=scope_of(connection),
        status_reason=connection.status_reason,
        secret=secret,
        problem=problem,
    )


@dataclass(frozen=True)
class DeliveryContext:
    """The worker's side of a delivery: who it is, its policies, and how it reaches the DB."""

    outbox: Outbox
    owner: str
    db: Db  # runs a synchronous function in a worker thread: await db(fn, *args)
    write: Db  # runs fn(session, *args) in a (shared) committed transaction: await write(fn, ...)
    # the same for fn(session, items) -> one result per item; calls in one transaction are merged
    write_merged: Callable[
        [Callable[[Session, list[Any]], Sequence[Any]], Sequence[Any]], Awaitable[list[Any]]
    ]
    guard: GuardPolicy
    tls: TlsPolicy | None = None
    resolver: Resolver | None = None
    rng: random.Random = field(default_factory=random.Random)


@dataclass(frozen=True, slots=True)
class Delivered:
    """What became of one claimed message (``state`` None: not tried, released)."""

    claimed: Claimed
    state: MessageState | None
    reason: str | None = None
    seconds: float | None = None  # how long its attempt took, when one was made


@dataclass
class _Result:
    """One attempt's result, before it is settled into states."""

    updates: list[RecipientUpdate] = field(default_factory=list)
    override: Verdict | None = None  # HELD or UNCERTAIN: the whole message
    reply: Reply | None = None
    error: str | None = None
    reason: str | None = None
    tried: int = 0


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One message's attempt, ready to be settled and stored."""

    claimed: Claimed
    outgoing: Outgoing | None
    result: _Result
    attempt_id: uuid.UUID | None
    started_at: datetime
    seconds: float
    transcript: str | None


class SmtpRun:
    """A session for one connection, carrying one message after another."""

    def __init__(self, context: DeliveryContext, plan: ConnectionPlan) -> None:
        self.context = context
        self.plan = plan
        self.session: SmtpSession | None = None
        self.target: PinnedTarget | None = None
        self.server_address: str | None = None
        self.broken = False
        self.held = False
        self._dirty = False
        self._timeouts = context.outbox.timeouts

    # -- the session -------------------------------------------------------------------------

    async def open(self) -> Judgement | None:
        """Connect and log in; the judgement on a failure (None when ready)."""
        plan = self.plan
        if plan.problem:
            return Judgement(Verdict.HELD, plan.problem)
        settings = plan.settings
        try:
            self.target = await netguard_resolve(
                settings.host,
                settings.port,
                self.context.guard,
                resolver=self.context.resolver,
                timeout=self._timeouts.connect,
            )
        except TargetUnreachable as exc:
            verdict = Verdict.HELD if exc.refused else Verdict.DEFERRED
            return Judgement(verdict, str(exc))
        secrets = [plan.secret.reveal()] if plan.secret is not None else []
        session = SmtpSession(self.target, settings.security, tls=self.context.tls, secrets=secrets)
        self.session = session
        try:
            connected = await connect_pinned(self.target, self._timeouts.connect)
            self.server_address = f"{connected.address}:{self.target.port}"
            await session.open(connected.sock, timeout=self._timeouts.command)
            await session.ehlo(timeout=self._timeouts.command)
            if settings.security is Security.STARTTLS:
                await session.starttls(timeout=self._timeouts.command)
                await session.ehlo(timeout=self._timeouts.command)
            if settings.auth is not AuthMethod.NONE:
                assert plan.secret is not None
                assert settings.username
                await session.authenticate(
                    settings.auth,
                    settings.username,
                    plan.secret.reveal(),
                    timeout=self._timeouts.command,
                )
        except SessionError as exc:
            self.broken = True
            session.close()
            return self._session_judgement(exc)
        except ConfigurationError as exc:  # credentials over an unencrypted connection
            self.broken = True
            session.close()
            return Judgement(Verdict.HELD, f"{exc.problem}: {exc.fix}")
        return None

    def _session_judgement(self, exc: SessionError) -> Judgement:
        if exc.reply is not None:
            judgement = judge_reply(exc.reply, exc.stage, self.plan.limits.provider_id)
            if judgement.verdict is Verdict.ACCEPTED:  # a success code where it makes no sense
                reason = f"{exc.stage.value}: unexpected reply {exc.reply}"
                return Judgement(Verdict.DEFERRED, reason)
            if judgement.verdict is Verdict.REJECTED:
                # A refusal of the whole session is not about a message: try again later.
                return Judgement(Verdict.DEFERRED, judgement.reason, judgement.cause)
            return judgement
        return judge_failure(exc.failure, f"{exc.stage.value}: {exc.detail}", final_dot_sent=False)

    async def close(self) -> None:
        session = self.session
        if session is None:
            return
        if self.broken or not session.connected:
            session.close()
            return
        try:
            await session.quit(timeout=min(self._timeouts.command, _QUIT_SECONDS))
        except SessionError:
            session.close()

    # -- records -----------------------------------------------------------------------------

    def _transcript(self) -> str | None:
        """The transcript since the last message's: the session's opening goes with the first
        message, each message's own lines with it. Cleared: a long session keeps no backlog."""
        if self.session is None:
            return None
        transcript = self.session.transcript
        text = str(transcript) or None
        transcript.clear()
        return text

    async def fail_all(self, batch: Sequence[Claimed], judgement: Judgement) -> list[Delivered]:
        """The session could not be opened: every message in the batch gets that attempt."""
        transcript = self._transcript()
        now = utcnow()
        outcomes = []
        for claimed in batch:
            result = _Result(override=None, reason=judgement.reason, error=judgement.reason)
            if judgement.verdict is Verdict.HELD:
                result.override = Verdict.HELD
            outcomes.append(_Outcome(claimed, None, result, None, now, 0.0, transcript))
        states = await self._store(outcomes)
        return [
            Delivered(outcome.claimed, state, judgement.reason, outcome.seconds)
            for outcome, state in zip(outcomes, states, strict=True)
        ]

    async def expire(self, claimed: Claimed) -> Delivered:
        context = self.context
        done = await context.write(expire_claimed, claimed, context.owner, utcnow())
        return Delivered(claimed, MessageState.EXPIRED if done else None)

    # -- one message -------------------------------------------------------------------------

    async def deliver_window(
        self,
        window: Sequence[tuple[Claimed, Outgoing | None]],
        stopping: Callable[[], bool] = lambda: False,
    ) -> tuple[list[Delivered], list[Claimed]]:
        """Send a few claimed messages (with their content and recipients, when the caller
        loaded them already) one after another through the open session, and record what
        happened: what became of each, and the messages not tried (the session broke, a
        hold, ``stopping()``), to be given back.

        The attempt rows of the whole window are written in one transaction before the first
        MAIL, and the results in one after the last reply: two commits per window instead of
        two per message. The price is the crash window: a worker killed in the middle leaves
        every message of the window whose result was not yet stored ``uncertain``.
        """
        context = self.context
        session = self.session
        assert session is not None
        missing = [claimed.id for claimed, outgoing in window if outgoing is None]
        loaded: dict[uuid.UUID, Outgoing] = {}
        if missing:
            tenant_id = window[0][0].tenant_id
            loaded = await context.db(context.outbox.read, load_outgoing_many, tenant_id, missing)
        delivered: list[Delivered] = []
        items: list[tuple[Claimed, Outgoing, _Result | None]] = []
        for claimed, given in window:
            outgoing = given or loaded.get(claimed.id)
            if outgoing is None:
                delivered.append(Delivered(claimed, None, "the message no longer exists"))
            else:
                items.append(
                    (claimed, outgoing, self._local_checks(outgoing, session.capabilities))
                )
        started_at = utcnow()
        to_open = [
            Opening(
                claimed, claimed.attempt_count + 1, context.owner, started_at, self.server_address
            )
            for claimed, _, local in items
            if not local
        ]
        opened: dict[uuid.UUID, uuid.UUID] = {}
        if to_open:
            attempts = await context.write_merged(open_attempts_many, to_open)
            opened = {
                opening.claimed.id: attempt_id
                for opening, attempt_id in zip(to_open, attempts, strict=True)
                if attempt_id is not None
            }
        outcomes: list[_Outcome] = []
        untried: list[tuple[Claimed, uuid.UUID]] = []
        for claimed, outgoing, local in items:
            attempt_id = opened.get(claimed.id)
            if local is None and attempt_id is None:
                # the lease ran out before DATA: recovery gave the message to another worker
                delivered.append(Delivered(claimed, None, "the lease was lost before DATA"))
                continue
            if attempt_id is not None and (self.broken or self.held or stopping()):
                untried.append((claimed, attempt_id))
                continue
            started_at = utcnow()
            started = time.perf_counter()
            result = local
            if result is None:
                pending = [(p, a) for p, a, s in outgoing.recipients if s in _OPEN_RECIPIENTS]
                result = _Result(tried=len(pending))
                await self._transaction(outgoing, pending, result)
                if result.override is Verdict.HELD:
                    self.held = True  # the rest of the window is given back, then held
            outcomes.append(
                _Outcome(
                    claimed,
                    outgoing,
                    result,
                    attempt_id,
                    started_at,
                    time.perf_counter() - started,
                    self._transcript(),
                )
            )
        states = await self._store(outcomes, untried)
        delivered.extend(
            Delivered(outcome.claimed, state, outcome.result.reason, outcome.seconds)
            for outcome, state in zip(outcomes, states, strict=True)
        )
        return delivered, [claimed for claimed, _ in untried]

    @staticmethod
    def _local_checks(outgoing: Outgoing, capabilities: Capabilities | None) -> _Result | None:
        """Refusals decided before any command: the message cannot go as stored, or the
        server cannot take it."""
        if has_bare_cr_or_lf(outgoing.content):
            # Stored content is CRLF-only (rendered or normalised at enqueue): anything else
            # was changed in the database since, and is not guessed at on the wire.
            reason = (
                "the stored message has a bare CR or LF (changed in the database after it was "
                "enqueued); it was not sent: enqueue it again"
            )
        elif capabilities is None:
            return None
        elif outgoing.smtputf8 and not capabilities.offers("SMTPUTF8"):
            reason = "the message needs SMTPUTF8 (a non-ASCII address) and the server lacks it"
        elif capabilities.size and outgoing.size > capabilities.size:
            reason = (
                f"the message is {outgoing.size} octets, more than the server's SIZE limit of "
                f"{capabilities.size}"
            )
        else:
            return None
        updates = [
            RecipientUpdate(p, RecipientState.REJECTED, text=reason)
            for p, _, s in outgoing.recipients
            if s in _OPEN_RECIPIENTS
        ]
        return _Result(updates=updates, error=reason, reason=reason)

    async def _transaction(
        self, outgoing: Outgoing, pending: list[tuple[int, str]], result: _Result
    ) -> None:
        """MAIL, RCPT, and DATA when a recipient was accepted (its attempt row is already
        written): pipelined when the server offers it. Fills ``result``."""
        session = self.session
        assert session is not None
        timeouts = self._timeouts
        if self._dirty:
            try:
                await session.rset(timeout=timeouts.command)
            except SessionError as exc:
                self._envelope_failure(exc, Stage.MAIL_FROM, pending, result)
                return
        self._dirty = True
        options = self._mail_options(outgoing, session.capabilities)
        if session.pipelining:
            await self._pipelined(outgoing, options, pending, result)
            return
        try:
            await session.mail_from(outgoing.envelope_from, options, timeout=timeouts.command)
        except SessionError as exc:
            self._envelope_failure(exc, Stage.MAIL_FROM, pending, result)
            return
        accepted: list[int] = []
        for position, address in pending:
            try:
                await session.rcpt_to(address, timeout=timeouts.command)
            except SessionError as exc:
                if exc.reply is None:
                    self._envelope_failure(exc, Stage.RCPT_TO, pending, result)
                    return
                if self._recipient_refused(position, exc, pending, result):
                    return
                continue
            accepted.append(position)
        if accepted:
            await self._data(outgoing, accepted, result)

    async def _pipelined(
        self,
        outgoing: Outgoing,
        options: list[str],
        pending: list[tuple[int, str]],
        result: _Result,
    ) -> None:
        """The same transaction in one round trip for the envelope (RFC 2920)."""
        session = self.session
        assert session is not None
        try:
            replies = await session.transaction(
                outgoing.envelope_from,
                options,
                [address for _, address in pending],
                outgoing.content,
                timeout=self._timeouts.command,
                data_timeout=self._timeouts.data,
            )
        except SessionError as exc:
            if exc.stage is Stage.DATA:
                self._data_failure(exc, session.final_dot_may_have_left, result)
            else:
                self._envelope_failure(exc, exc.stage, pending, result)
            return
        if replies.mail.code != 250:
            refused = SessionError(Stage.MAIL_FROM, reply=replies.mail, detail=str(replies.mail))
            self._envelope_failure(refused, Stage.MAIL_FROM, pending, result)
            return
        accepted: list[int] = []
        for (position, _), reply in zip(pending, replies.rcpt, strict=False):
            if reply.code in (250, 251):
                accepted.append(position)
                continue
            refused = SessionError(Stage.RCPT_TO, reply=reply, detail=str(reply))
            if self._recipient_refused(position, refused, pending, result):
                return
        if not accepted:
            return
        data, final = replies.data, replies.final
        assert data is not None  # every RCPT reply came, so the DATA reply did too
        if data.code != 354 or final is None:
            self._after_data_refusal(data, accepted, result)
            return
        if final.code != 250:
            self._after_data_refusal(final, accepted, result)
            return
        self._accepted(final, accepted, result)

    def _recipient_refused(
        self, position: int, exc: SessionError, pending: list[tuple[int, str]], result: _Result
    ) -> bool:
        """A RCPT refused with ``exc.reply``: that recipient's new state. True when the whole
        transaction ends here (a 421, or a hold)."""
        reply = exc.reply
        assert reply is not None
        if reply.code == 421:
            self._envelope_failure(exc, Stage.RCPT_TO, pending, result)
            return True
        judgement = judge_reply(reply, Stage.RCPT_TO, self.plan.limits.provider_id)
        if judgement.verdict is Verdict.HELD:
            result.override, result.reason, result.reply = Verdict.HELD, judgement.reason, reply
            return True
        state = (
            RecipientState.REJECTED
            if judgement.verdict is Verdict.REJECTED
            else RecipientState.DEFERRED
        )
        result.updates.append(_update(position, state, reply))
        result.reply, result.reason = reply, judgement.reason
        return False

    async def _data(self, outgoing: Outgoing, accepted: list[int], result: _Result) -> None:
        session = self.session
        assert session is not None
        try:
            reply = await session.data(outgoing.content, timeout=self._timeouts.data)
        except SessionError as exc:
            if exc.reply is None:
                self._data_failure(exc, session.final_dot_may_have_left, result)
                return
            self._after_data_refusal(exc.reply, accepted, result)
            return
        self._accepted(reply, accepted, result)

    def _accepted(self, reply: Reply, accepted: list[int], result: _Result) -> None:
        self._dirty = False
        result.reply = reply
        result.updates.extend(_update(p, RecipientState.ACCEPTED, reply) for p in accepted)

    def _data_failure(self, exc: SessionError, final_dot_sent: bool, result: _Result) -> None:
        """The connection broke or timed out during DATA: deferred, or uncertain when the
        final "." may have left this machine."""
        self.broken = True
        judgement = judge_failure(
            exc.failure, f"{exc.stage.value}: {exc.detail}", final_dot_sent=final_dot_sent
        )
        result.error = result.reason = judgement.reason
        if judgement.verdict is Verdict.UNCERTAIN:
            result.override = Verdict.UNCERTAIN

    def _after_data_refusal(self, reply: Reply, accepted: list[int], result: _Result) -> None:
        if reply.code == 421:
            self.broken = True
        judgement = judge_reply(reply, Stage.DATA, self.plan.limits.provider_id)
        result.reply, result.reason = reply, judgement.reason
        if judgement.verdict is Verdict.HELD:
            result.override = Verdict.HELD
            return
        state = (
            RecipientState.REJECTED
            if judgement.verdict is Verdict.REJECTED
            else RecipientState.DEFERRED
        )
        result.updates.extend(_update(p, state, reply) for p in accepted)

    def _envelope_failure(
        self,
        exc: SessionError,
        stage: Stage,
        pending: list[tuple[int, str]],
        result: _Result,
    ) -> None:
        """MAIL refused, or the connection lost during the envelope: nothing was sent."""
        if exc.reply is None or exc.reply.code == 421:
            self.broken = True
        if exc.reply is None:
            judgement = judge_failure(
                exc.failure, f"{exc.stage.value}: {exc.detail}", final_dot_sent=False
            )
            result.error = judgement.reason
        else:
            judgement = judge_reply(exc.reply, stage, self.plan.limits.provider_id)
            result.reply = exc.reply
        result.reason = judgement.reason
        if judgement.verdict is Verdict.HELD:
            result.override = Verdict.HELD
        elif judgement.verdict is Verdict.REJECTED and stage is Stage.MAIL_FROM:
            reply = exc.reply
            result.updates.extend(_update(p, RecipientState.REJECTED, reply) for p, _ in pending)
        # deferred: recipients keep their state (they were not refused, only not reached)

    @staticmethod
    def _mail_options(outgoing: Outgoing, capabilities: Capabilities | None) -> list[str]:
        options: list[str] = []
        if capabilities is None:
            return options
        if capabilities.size is not None:
            options.append(f"SIZE={outgoing.size}")
        if not outgoing.content.isascii() and capabilities.offers("8BITMIME"):
            options.append("BODY=8BITMIME")
        if outgoing.smtputf8:
            options.append("SMTPUTF8")
        return options

    # -- settling ----------------------------------------------------------------------------

    async def _store(
        self, outcomes: Sequence[_Outcome], untried: Sequence[tuple[Claimed, uuid.UUID]] = ()
    ) -> list[MessageState]:
        """Settle the outcomes into states and store them in one transaction; attempts opened
        for messages not tried are removed first. Returns each outcome's state."""
        context = self.context
        now = utcnow()
        stored: list[Finished] = []
        hold: tuple[uuid.UUID, str] | None = None
        for outcome in outcomes:
            claimed, result = outcome.claimed, outcome.result
            number = claimed.attempt_count + 1
            settlement = self._settlement(claimed, outcome.outgoing, result, number, now)
            reply = result.reply
            record = AttemptRecord(
                number=number,
                started_at=outcome.started_at,
                duration_ms=round(outcome.seconds * 1000),
                outcome=_attempt_outcome(result),
                owner=context.owner,
                server_address=self.server_address,
                reply_code=reply.code if reply else None,
                enhanced_code=enhanced_code(reply) if reply else None,
                reply_text=reply.message if reply else None,
                transcript=outcome.transcript,
                error=result.error,
            )
            if settlement.state is MessageState.HELD:
                self.held = True
                if hold is None:
                    hold = (
                        self.plan.connection_id,
                        result.reason or "a login or permission problem",
                    )
            stored.append(Finished(claimed, outcome.attempt_id, record, result.updates, settlement))
        if stored or untried:
            storing = _Storing(stored, list(untried), now, hold, context.owner)
            await context.write_merged(_store_results, [storing])
        return [item.settlement.state for item in stored]

    def _settlement(
        self,
        claimed: Claimed,
        outgoing: Outgoing | None,
        result: _Result,
        number: int,
        now: datetime,
    ) -> Settlement:
        policy = self.context.outbox.retry
        if result.override is Verdict.HELD:
            return Settlement(MessageState.HELD, result.reason)
        if result.override is Verdict.UNCERTAIN:
            # next_attempt_at matters only to a worker that resends uncertain messages.
            when = now + timedelta(seconds=policy.first_delay)
            return Settlement(MessageState.UNCERTAIN, result.reason, when)
        states = {p: s for p, _, s in outgoing.recipients} if outgoing else {}
        for change in result.updates:
            if states.get(change.position) is not RecipientState.ACCEPTED:
                states[change.position] = change.state
        state = settle(states.values()) if states else MessageState.DEFERRED
        if state is not MessageState.DEFERRED:
            return Settlement(state, result.reason if state is not MessageState.SENT else None)
        retry_at = next_attempt(number, now, claimed.expires_at, policy, self.context.rng)
        if retry_at is None:
            reason = f"expired: still not delivered at its expiry time ({result.reason})"
            return Settlement(MessageState.EXPIRED, reason)
        return Settlement(MessageState.DEFERRED, result.reason, retry_at)


def _update(position: int, state: RecipientState, reply: Reply | None) -> RecipientUpdate:
    if reply is None:
        return RecipientUpdate(position, state)
    return RecipientUpdate(position, state, reply.code, enhanced_code(reply), reply.message)


def _attempt_outcome(result: _Result) -> AttemptOutcome:
    if result.override is Verdict.HELD:
        return AttemptOutcome.HELD
    if result.override is Verdict.UNCERTAIN:
        return AttemptOutcome.UNCERTAIN
    accepted = sum(u.state is RecipientState.ACCEPTED for u in result.updates)
    if result.tried and accepted == result.tried:
        return AttemptOutcome.SENT
    if accepted:
        return AttemptOutcome.PARTIALLY_SENT
    rejected = sum(u.state is RecipientState.REJECTED for u in result.updates)
    if result.tried and rejected == result.tried:
        return AttemptOutcome.REJECTED
    if not result.tried and rejected:
        return AttemptOutcome.REJECTED
    return AttemptOutcome.DEFERRED


# -- synchronous database steps (run in the worker's threads) ----------------------------------


@dataclass(frozen=True, slots=True)
class _Storing:
    """One window's results, as :func:`_store_results` stores them."""

    stored: Sequence[Finished]
    untried: Sequence[tuple[Claimed, uuid.UUID]]
    now: datetime
    hold: tuple[uuid.UUID, str] | None  # (connection, reason): it needs attention
    owner: str


def _store_results(session: Session, windows: Sequence[_Storing]) -> list[None]:
    """The results of several windows (of this worker's sessions) in one go: attempts never
    started removed, every result stored, then the connections to hold marked."""
    if not windows:
        return []
    for owner in dict.fromkeys(window.owner for window in windows):
        untried = [u for window in windows if window.owner == owner for u in window.untried]
        discard_attempts(session, untried, owner)
    results = [item for window in windows for item in window.stored]
    finish_many(session, results, max(window.now for window in windows))
    for window in windows:
        if window.hold is not None:
            connection_id, reason = window.hold
            tenant_id = window.stored[0].claimed.tenant_id
            hold_connection(session, tenant_id, connection_id, reason, window.owner, window.now)
    return [None] * len(windows)
