"""The public surface is what mailconnect/__init__.py exports, and nothing is missing from it."""

from __future__ import annotations

import pickle

import mailconnect


def test_all_names_exist_and_are_sorted() -> None:
    assert mailconnect.__all__ == sorted(mailconnect.__all__)
    for name in mailconnect.__all__:
        assert hasattr(mailconnect, name), name


def test_every_public_name_is_exported_on_purpose() -> None:
    # Anything public at the top level is in __all__, and nothing else is: a new import in
    # __init__.py must be a deliberate part of the API, not an accident.
    import types

    public = {
        name
        for name, value in vars(mailconnect).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    # Subpackages imported by __init__ appear as attributes too; `probe` is the function.
    assert public == set(mailconnect.__all__) - {"__version__"}


def test_get_type_hints_work_on_public_classes() -> None:
    # FastAPI and pydantic resolve annotations through the defining module.
    import typing

    for name in mailconnect.__all__:
        value = getattr(mailconnect, name)
        if isinstance(value, type):
            typing.get_type_hints(value)


def test_public_values_still_pickle() -> None:
    finding = mailconnect.Finding(
        "acme.code", mailconnect.Severity.WARNING, "A message.", "A remedy.", "RFC 5321"
    )
    assert pickle.loads(pickle.dumps(finding)) == finding  # noqa: S301
    for member in (
        mailconnect.Severity.ERROR,
        mailconnect.Security.STARTTLS,
        mailconnect.Cause.UNKNOWN,
    ):
        assert pickle.loads(pickle.dumps(member)) is member  # noqa: S301
    settings = mailconnect.ConnectionSettings.parse(
        host="smtp.acme.example", port=587, security="starttls", username="jobs@acme.example"
    )
    assert pickle.loads(pickle.dumps(settings)) == settings  # noqa: S301
    assert pickle.loads(pickle.dumps(mailconnect.lint)) is mailconnect.lint  # noqa: S301


def test_configuration_errors_are_not_delivery_errors() -> None:
    assert issubclass(mailconnect.ConfigurationError, ValueError)
    assert not issubclass(mailconnect.ConfigurationError, mailconnect.DeliveryError)
    assert issubclass(mailconnect.DiscoveryError, mailconnect.DeliveryError)
