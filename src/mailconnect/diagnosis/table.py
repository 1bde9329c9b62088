"""The shape of ``replies.toml``, the table of known replies and errors, checked when loaded.

The table is data; this module says what a valid entry is. An entry has *conditions* (which
replies or failures it explains) and the *diagnosis* it gives (cause, who acts, fix steps).

Conditions, all optional but at least one of ``code``, ``enhanced`` and ``pattern``:

``code``
    the basic reply code, e.g. 535.
``enhanced``
    an enhanced status code (``"5.7.139"``), a class and subject (``"5.7"``) or only a class
    (``"5"``, which also matches a reply that has only a basic code of that class).
``pattern``
    a case-insensitive regular expression searched in the reply text and in the whole pasted text.
``providers``
    catalogue ids. With a ``pattern`` the text itself identifies the reply and a matching provider
    only makes the entry more specific; without one, the entry applies only to these providers.
``stages``, ``ports``, ``security``
    the entry applies only when the caller knows the stage, port or security and it is listed.
``failures``
    failure kinds (:class:`Failure`) the connection test reports; such an entry describes a
    client-side error, needs a ``pattern`` and matches pasted text only when it has no reply code.

Every entry carries ``examples``: texts (or tables with ``text`` and the context: ``provider``,
``stage``, ``port``, ``security``) that must be diagnosed as this entry; the tests check them.
"""

from __future__ import annotations

import re
import tomllib
from functools import cache, cached_property
from importlib import resources
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mailconnect.diagnosis.vocabulary import Actor, Cause, Failure, Stage
from mailconnect.errors import CatalogueError
from mailconnect.settings import Security

__all__ = ["Advice", "Entry", "Example", "Replies", "load_replies", "parse_replies"]

Text = Annotated[str, Field(min_length=3)]
Url = Annotated[str, Field(pattern=r"^https://[^\s]+$")]
Port = Annotated[int, Field(ge=1, le=65535)]
ProviderId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")]
_ENHANCED = r"^[245](\.\d{1,3}(\.\d{1,3})?)?$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Advice(_Strict):
    """What a diagnosis says: the cause, who acts, what to do."""

    cause: Cause
    title: Text
    explanation: Text
    actor: Actor
    fix: Annotated[list[Text], Field(min_length=1)]
    doc_url: Url | None = None
    retryable: bool


class Example(_Strict):
    """A text that must be diagnosed as its entry, with the context it comes with."""

    text: Annotated[str, Field(min_length=1)]
    provider: ProviderId | None = None
    stage: Stage | None = None
    port: Port | None = None
    security: Security | None = None


class Entry(Advice):
    """One known reply or error and its diagnosis."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
    code: Annotated[int, Field(ge=200, le=599)] | None = None
    enhanced: Annotated[str, Field(pattern=_ENHANCED)] | None = None
    pattern: str | None = None
    providers: list[ProviderId] = []
    stages: list[Stage] = []
    ports: list[Port] = []
    security: list[Security] = []
    failures: list[Failure] = []
    source: str | None = None  # where the reply's wording is documented
    examples: Annotated[list[Example], Field(min_length=1)]

    @field_validator("examples", mode="before")
    @classmethod
    def _texts_are_examples(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"text": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value, re.IGNORECASE)
            except re.error as exc:
                raise ValueError(f"pattern does not compile: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Entry:
        if self.code is None and self.enhanced is None and self.pattern is None:
            raise ValueError("give at least one of code, enhanced and pattern")
        if self.code is not None and self.enhanced and self.enhanced[0] != str(self.code)[0]:
            raise ValueError(f"enhanced {self.enhanced} is of another class than code {self.code}")
        if self.failures and (self.pattern is None or self.code or self.enhanced):
            raise ValueError("an entry for client-side failures needs a pattern and no codes")
        return self

    @cached_property
    def regex(self) -> re.Pattern[str] | None:
        return re.compile(self.pattern, re.IGNORECASE) if self.pattern else None

    @property
    def unconditional(self) -> bool:
        """True when no context (provider, stage, port, security) limits the entry."""
        return not (self.providers or self.stages or self.ports or self.security)


class Replies(_Strict):
    """The whole table: the entries, and the advice when nothing matches."""

    fallback: Advice
    entries: Annotated[list[Entry], Field(min_length=1)]

    @model_validator(mode="after")
    def _complete(self) -> Replies:
        ids = [e.id for e in self.entries]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate entry ids: {dupes}")
        covered = {f for e in self.entries if e.unconditional for f in e.failures}
        missing = [f.value for f in Failure if f not in covered]
        if missing:
            raise ValueError(f"failure kinds without an entry free of conditions: {missing}")
        return self


def parse_replies(text: str, name: str = "replies.toml") -> Replies:
    """Validate the table's text; a malformed entry raises :class:`CatalogueError` naming it."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(name, f"is not valid TOML ({exc})", "fix the file's syntax") from exc
    entries = data.get("reply", [])
    try:
        return Replies.model_validate({"fallback": data.get("fallback"), "entries": entries})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        where = ".".join(str(part) for part in loc)
        index = loc[1] if len(loc) > 1 and loc[0] == "entries" else None
        if isinstance(index, int) and index < len(entries) and isinstance(entries[index], dict):
            where = f"reply '{entries[index].get('id', index)}': {where}"
        raise CatalogueError(
            name,
            f"{where}: {first['msg']}",
            "correct the entry; see mailconnect/diagnosis/table.py",
        ) from exc


@cache
def load_replies() -> Replies:
    """The table shipped with mailconnect, validated once per process."""
    text = resources.files("mailconnect.diagnosis").joinpath("replies.toml").read_text("utf-8")
    return parse_replies(text)
