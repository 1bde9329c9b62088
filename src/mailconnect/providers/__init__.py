"""The provider catalogue: what each mail provider offers and refuses, loaded from data."""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources

from pydantic import ValidationError

from mailconnect.errors import CatalogueError
from mailconnect.providers.docs import render_markdown
from mailconnect.providers.model import (
    Advice,
    Catalogue,
    DocLink,
    Endpoint,
    Limits,
    Login,
    LoginAdvice,
    Provider,
    Refusal,
    host_matches,
)

__all__ = [
    "Advice",
    "Catalogue",
    "DocLink",
    "Endpoint",
    "Limits",
    "Login",
    "LoginAdvice",
    "Provider",
    "Refusal",
    "host_matches",
    "load_catalogue",
    "parse_catalogue",
    "render_markdown",
]


def parse_catalogue(text: str, name: str = "catalogue.toml") -> Catalogue:
    """Validate catalogue text; a malformed entry raises :class:`CatalogueError` with its path."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(name, f"is not valid TOML ({exc})", "fix the file's syntax") from exc
    try:
        return Catalogue.model_validate({"providers": data.get("provider", [])})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        providers = data.get("provider", [])
        index = first["loc"][1] if len(first["loc"]) > 1 else None
        if isinstance(index, int) and index < len(providers):
            where = f"provider '{providers[index].get('id', index)}': {where}"
        raise CatalogueError(
            name, f"{where}: {first['msg']}", "correct the entry; see docs/providers.md"
        ) from exc


@cache
def load_catalogue() -> Catalogue:
    """The catalogue shipped with mailconnect, validated once per process."""
    text = resources.files("mailconnect.providers").joinpath("catalogue.toml").read_text("utf-8")
    return parse_catalogue(text)
