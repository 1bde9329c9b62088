"""The connection test: run the steps in order, record each, stop at the first failure.

Nothing is sent that the test does not need: no message unless ``send_test_to`` is given, no
AUTH unless a login is configured (and never before TLS), RSET to drop the envelope again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import TracebackType

from mailconnect.diagnosis import Diagnosis, Failure, Stage
from mailconnect.netguard import GuardPolicy, PinnedTarget, Resolver, TargetUnreachable
from mailconnect.netguard import resolve_and_check as netguard_resolve
from mailconnect.probe._diagnose import diagnose, it_text, resolve_failure
from mailconnect.probe._envelope import mail_options, wire_address
from mailconnect.probe._message import build_test_message
from mailconnect.probe._plan import Plan, prepare, settings_summary
from mailconnect.probe._report import Report
from mailconnect.probe._steps import StepName, StepResult, StepStatus, stage_of, steps_for
from mailconnect.probe._symptoms import greets_in_plaintext, speaks_tls
from mailconnect.probe._timeouts import Deadline, Timeouts
from mailconnect.settings import AuthMethod, ConnectionSettings, Security
from mailconnect.smtp import Connected, Reply, SessionError, SmtpSession, TlsPolicy, connect_pinned

__all__ = ["probe"]

EXPIRY_WARNING_DAYS = 14
_SECOND_OPINION_SECONDS = 3.0
_QUIT_SECONDS = 2.0


async def probe(
    settings: ConnectionSettings,
    *,
    password: str | None = None,
    oauth_token: str | None = None,
    recipient: str | None = None,
    send_test_to: str | None = None,
    policy: GuardPolicy | None = None,
    tls: TlsPolicy | None = None,
    timeouts: Timeouts | None = None,
    resolver: Resolver | None = None,
    ehlo_name: str | None = None,
) -> Report:
    """Test a connection step by step and return the :class:`Report`.

    ``password`` (auth ``password``) or ``oauth_token`` (auth ``oauth2``) is used for AUTH only and
    never appears in the report. ``recipient`` is tried in RCPT TO (default: the sender);
    ``send_test_to`` sends one real test message there. ``policy`` is the network guard (on by
    default: the host must be public); the host is resolved once and the connection goes to that
    address, with the name used for TLS. ``tls`` sets certificate checking (on by default).

    Raises :class:`~mailconnect.errors.ConfigurationError` (naming the field) for invalid input,
    before any connection; every failure after that ends up in the report instead.
    """
    prepared = prepare(
        settings,
        password=password,
        oauth_token=oauth_token,
        recipient=recipient,
        send_test_to=send_test_to,
        policy=policy,
        tls=tls,
        timeouts=timeouts,
        resolver=resolver,
        ehlo_name=ehlo_name,
    )
    return await Probe(prepared).run()


class _Stopped(Exception):
    """A step failed; it is recorded, the remaining steps are skipped."""


@dataclass
class _Draft:
    """What a running step has to say, filled in as it goes."""

    summary: str = ""
    status: StepStatus = StepStatus.PASSED
    observations: dict[str, object] = field(default_factory=dict)
    reply: Reply | None = None
    expects_implicit_tls: bool = False


class _StepScope:
    """The context of one running step (a class, not a generator: it runs a dozen times per
    test and sits on the benchmark's path)."""

    __slots__ = ("draft", "name", "probe", "started")

    def __init__(self, probe: Probe, name: StepName) -> None:
        self.probe = probe
        self.name = name
        self.draft = _Draft()
        self.started = 0.0

    async def __aenter__(self) -> _Draft:
        self.started = time.perf_counter()
        return self.draft

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if error is None:
            self.probe.record(self.name, self.draft, self.started)
        elif isinstance(error, SessionError):
            self.probe.fail(self.name, error, self.draft, self.started)
            raise _Stopped from error
        return False


class Probe:
    """One run of the steps for a validated :class:`Plan`."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.settings = plan.settings
        self.deadline = Deadline(plan.timeouts.total)
        self.results: dict[StepName, StepResult] = {}
        self.session: SmtpSession | None = None
        self.address: str | None = None
        self.it_message: str | None = None
        self.message_id: str | None = None
        self.operator_note: str | None = None
        self._open_envelope = False

    # -- recording -----------------------------------------------------------------------------

    def record(
        self,
        name: StepName,
        draft: _Draft,
        started: float,
        diagnosis: Diagnosis | None = None,
    ) -> None:
        self.results[name] = StepResult(
            name=name,
            status=draft.status,
            summary=draft.summary,
            duration_ms=(time.perf_counter() - started) * 1000,
            observations=dict(draft.observations),
            reply=draft.reply,
            diagnosis=diagnosis,
        )

    def skip(self, name: StepName, why: str) -> None:
        self.results[name] = StepResult(name, StepStatus.SKIPPED, why)

    def fail(self, name: StepName, error: SessionError, draft: _Draft, started: float) -> None:
        diagnosis = diagnose(
            error,
            self.settings,
            provider=self.plan.provider,
            secrets=self.plan.secrets,
            expects_implicit_tls=draft.expects_implicit_tls,
        )
        draft.status = StepStatus.FAILED
        draft.summary = error.detail
        draft.reply = error.reply
        self.record(name, draft, started, diagnosis=diagnosis)
        self.it_message = it_text(
            diagnosis,
            stage=error.stage if error.stage is not Stage.UNKNOWN else stage_of(name),
            summary=settings_summary(self.plan, self.address),
            error=error,
            secrets=self.plan.secrets,
        )

    def step(self, name: StepName) -> _StepScope:
        """``async with probe.step(name) as draft``: time the body and record it as step
        ``name``; a SessionError in it becomes the step's failure and stops the run."""
        return _StepScope(self, name)

    def budget(self, seconds: float, name: StepName) -> float:
        return self.deadline.budget(seconds, stage_of(name))

    # -- the run -------------------------------------------------------------------------------

    async def run(self) -> Report:
        started = time.perf_counter()
        try:
            await self._steps()
        except _Stopped:
            pass
        except BaseException:
            if self.session is not None:
                self.session.close()
            raise
        await self._quit()
        return self._report(started)

    async def _steps(self) -> None:
        target = await self._resolve()
        connected = await self._connect(target)
        self.session = SmtpSession(
            target,
            self.settings.security,
            tls=self.plan.tls,
            ehlo_name=self.plan.ehlo_name,
            secrets=self.plan.secrets,
        )
        if self.settings.security is Security.TLS:
            await self._open(StepName.TLS, target, connected)
            await self._certificate()
            await self._ehlo(StepName.EHLO)
        else:
            await self._open(StepName.GREETING, target, connected)
            await self._ehlo(StepName.EHLO)
            if self.settings.security is Security.STARTTLS:
                await self._starttls()
                await self._certificate()
                await self._ehlo(StepName.EHLO_TLS)
        await self._auth()
        await self._envelope()

    async def _resolve(self) -> PinnedTarget:
        host, port, policy = self.settings.host, self.settings.port, self.plan.policy
        async with self.step(StepName.RESOLVE) as draft:
            seconds = self.budget(self.plan.timeouts.connect, StepName.RESOLVE)
            try:
                target = await netguard_resolve(
                    host, port, policy, resolver=self.plan.resolver, timeout=seconds
                )
            except TargetUnreachable as exc:
                self.operator_note = exc.internal_reason
                failure, detail = resolve_failure(exc, guarded=policy.enabled)
                raise SessionError(Stage.RESOLVE, failure=failure, detail=detail) from exc
            self.address = target.address
            addresses = list(target.all_addresses)
            draft.summary = (
                f"{host.ascii} is an IP address: nothing to look up"
                if host.is_ip
                else f"{host.ascii} is {', '.join(addresses)}"
            )
            draft.observations = {"addresses": addresses, "pinned": target.address}
        if policy.enabled:
            guard = _Draft(summary="every address is public and the port is allowed")
            guard.observations = {"enabled": True}
            self.record(StepName.GUARD, guard, time.perf_counter())
        else:
            self.skip(StepName.GUARD, f"off; the connection still goes to {target.address} only")
        return target

    async def _connect(self, target: PinnedTarget) -> Connected:
        async with self.step(StepName.CONNECT) as draft:
            seconds = self.budget(self.plan.timeouts.connect, StepName.CONNECT)
            connected = await connect_pinned(target, seconds)
            self.address = connected.address
            draft.summary = f"TCP connection to {connected.address} port {target.port}"
            draft.observations = {
                "address": connected.address,
                "port": target.port,
                "failed_addresses": [{"address": a, "error": e} for a, e in connected.failed],
            }
        return connected

    async def _open(self, name: StepName, target: PinnedTarget, connected: Connected) -> None:
        session = self._session()
        async with self.step(name) as draft:
            seconds = self.budget(self.plan.timeouts.step, name)
            try:
                greeting = await session.open(connected.sock, timeout=seconds)
            except SessionError as error:
                raise await self._second_opinion(error, target, draft) from error
            draft.reply = greeting
            draft.observations = {"greeting": str(greeting)}
            if session.tls is not None:
                draft.summary = f"{session.tls.version} handshake, then the greeting: {greeting}"
                draft.observations["tls_version"] = session.tls.version
            else:
                draft.summary = f"the server greeted: {greeting}"

    async def _second_opinion(
        self, error: SessionError, target: PinnedTarget, draft: _Draft
    ) -> SessionError:
        """Tell a TLS mode mismatch from a silent or broken server (see ``_symptoms``)."""
        seconds = min(_SECOND_OPINION_SECONDS, self.plan.timeouts.step, self.deadline.remaining())
        implicit = self.settings.security is Security.TLS
        if seconds <= 0:
            return error
        silent = error.failure in {Failure.BANNER_TIMEOUT, Failure.DISCONNECTED}
        if not implicit and silent and await speaks_tls(target, seconds):
            draft.expects_implicit_tls = True
            draft.observations["suggested_security"] = Security.TLS.value
            detail = (
                f"{error.detail}; a second connection completed a TLS handshake at once: "
                "this port expects implicit TLS (security tls)"
            )
            return SessionError(error.stage, failure=error.failure, detail=detail)
        if implicit and error.failure is Failure.TLS_WRONG_VERSION:
            greeting = await greets_in_plaintext(target, seconds)
            if greeting is not None:
                draft.observations["suggested_security"] = Security.STARTTLS.value
                detail = (
                    f"{error.detail}; a second connection got a plain-text greeting "
                    f"({greeting}): this port expects STARTTLS (security starttls)"
                )
                return SessionError(error.stage, failure=error.failure, detail=detail)
        return error

    def _session(self) -> SmtpSession:
        assert self.session is not None
        return self.session

    async def _ehlo(self, name: StepName) -> None:
        session = self._session()
        async with self.step(name) as draft:
            capabilities = await session.ehlo(timeout=self.budget(self.plan.timeouts.step, name))
            draft.observations = capabilities.as_dict()
            offered = " ".join(capabilities.auth) or "no AUTH"
            draft.summary = f"{capabilities.greeting}: {offered}"
            if capabilities.size:
                draft.summary += f", SIZE {capabilities.size}"
            before_tls = name is StepName.EHLO and self.settings.security is Security.STARTTLS
            if before_tls:
                draft.summary += "; STARTTLS offered" if capabilities.starttls else "; no STARTTLS"
                if capabilities.auth:
                    draft.status = StepStatus.WARNING
                    draft.summary += (
                        " (the server offers AUTH before encryption; mailconnect never uses it "
                        "there, and forgets these capabilities after STARTTLS)"
                    )

    async def _starttls(self) -> None:
        session = self._session()
        async with self.step(StepName.STARTTLS) as draft:
            info = await session.starttls(
                timeout=self.budget(self.plan.timeouts.step, StepName.STARTTLS)
            )
            draft.summary = f"encryption started: {info.version}, {info.cipher}"

    async def _certificate(self) -> None:
        info = self._session().tls
        assert info is not None
        async with self.step(StepName.CERTIFICATE) as draft:
            draft.observations = info.as_dict()
            if not info.version_ok:
                raise SessionError(
                    Stage.TLS,
                    failure=Failure.TLS_PROTOCOL_VERSION,
                    detail=f"the connection uses {info.version}; TLS 1.2 or newer is required",
                )
            if not info.verified:
                draft.status = StepStatus.WARNING
                draft.summary = (
                    f"NOT verified: certificate checks are off ({info.version}, {info.cipher})"
                )
                return
            names = ", ".join(info.names) or "(no names)"
            draft.summary = (
                f"valid for {self.settings.host.ascii} ({names}), {info.days_left} days left; "
                f"{info.version}, {info.cipher}"
            )
            if info.days_left is not None and info.days_left < EXPIRY_WARNING_DAYS:
                draft.status = StepStatus.WARNING
                draft.summary = f"expires in {info.days_left} days: " + draft.summary

    async def _auth(self) -> None:
        settings = self.settings
        if settings.auth is AuthMethod.NONE or self.plan.secret is None:
            self.skip(StepName.AUTH, "no login configured")
            return
        session = self._session()
        assert settings.username is not None  # prepare() checked it
        async with self.step(StepName.AUTH) as draft:
            offered = list(session.capabilities.auth) if session.capabilities else []
            draft.observations = {"offered": offered}
            mechanism, reply = await session.authenticate(
                settings.auth,
                settings.username,
                self.plan.secret,
                timeout=self.budget(self.plan.timeouts.step, StepName.AUTH),
            )
            draft.reply = reply
            draft.observations["mechanism"] = mechanism.value
            draft.summary = f"signed in as {settings.username} with {mechanism.value}"

    async def _envelope(self) -> None:
        sender, recipient = self.plan.sender, self.plan.recipient
        if sender is None or recipient is None:
            for name in (StepName.MAIL_FROM, StepName.RCPT_TO, StepName.DATA, StepName.RSET):
                self.skip(name, "no sender address given")
            return
        session = self._session()
        message: tuple[bytes, str] | None = None
        if self.plan.send_test_to is not None:
            message = build_test_message(
                sender, self.plan.send_test_to, server=self.settings.host.display
            )
        wire_sender, wire_recipient = wire_address(sender), wire_address(recipient)
        async with self.step(StepName.MAIL_FROM) as draft:
            options = mail_options(
                [wire_sender, wire_recipient],
                session.capabilities,
                len(message[0]) if message else None,
            )
            draft.reply = await session.mail_from(
                wire_sender,
                options,
                timeout=self.budget(self.plan.timeouts.step, StepName.MAIL_FROM),
            )
            self._open_envelope = True
            draft.summary = f"the server accepts {sender} as the sender"
            draft.observations = {"sender": sender, "options": options}
        async with self.step(StepName.RCPT_TO) as draft:
            draft.reply = await session.rcpt_to(
                wire_recipient,
                timeout=self.budget(self.plan.timeouts.step, StepName.RCPT_TO),
            )
            draft.summary = f"the server accepts {recipient} as a recipient"
            draft.observations = {"recipient": recipient}
        if message is None:
            self.skip(StepName.DATA, "no test message requested")
        else:
            await self._data(*message)
        await self._rset()

    async def _data(self, message: bytes, message_id: str) -> None:
        session = self._session()
        async with self.step(StepName.DATA) as draft:
            reply = await session.data(
                message, timeout=self.budget(self.plan.timeouts.data, StepName.DATA)
            )
            self._open_envelope = False
            self.message_id = message_id
            draft.reply = reply
            draft.summary = f"test message {message_id} accepted: {reply}"
            draft.observations = {"message_id": message_id, "size": len(message)}

    async def _rset(self) -> None:
        if not self._open_envelope:
            self.skip(StepName.RSET, "nothing to reset")
            return
        draft, started = _Draft(), time.perf_counter()
        try:
            seconds = self.budget(self.plan.timeouts.step, StepName.RSET)
            draft.reply = await self._session().rset(timeout=seconds)
        except SessionError as error:
            draft.status, draft.summary = StepStatus.WARNING, f"RSET failed: {error.detail}"
        else:
            ok = draft.reply.code == 250
            draft.status = StepStatus.PASSED if ok else StepStatus.WARNING
            draft.summary = f"envelope dropped: {draft.reply}"
        self.record(StepName.RSET, draft, started)

    async def _quit(self) -> None:
        session = self.session
        if session is None or not session.connected:
            if session is not None:
                session.close()
            self.skip(StepName.QUIT, "the connection was already closed")
            return
        draft, started = _Draft(), time.perf_counter()
        try:
            seconds = min(_QUIT_SECONDS, max(self.deadline.remaining(), 0.1))
            reply = await session.quit(timeout=seconds)
        except SessionError as error:
            draft.status, draft.summary = StepStatus.WARNING, f"QUIT failed: {error.detail}"
        else:
            draft.reply = reply
            draft.summary = f"closed: {reply}" if reply else "closed"
        self.record(StepName.QUIT, draft, started)

    def _report(self, started: float) -> Report:
        failed = any(r.status is StepStatus.FAILED for r in self.results.values())
        steps = []
        for name in steps_for(self.settings.security):
            result = self.results.get(name)
            if result is None:
                why = "not run: an earlier step failed" if failed else "not needed"
                result = StepResult(name, StepStatus.SKIPPED, why)
            steps.append(result)
        return Report(
            settings=settings_summary(self.plan, self.address),
            steps=tuple(steps),
            findings=self.plan.findings,
            transcript=self.session.transcript.lines if self.session else (),
            duration_ms=(time.perf_counter() - started) * 1000,
            it_message=self.it_message,
            message_id=self.message_id,
            operator_note=self.operator_note,
        )
