"""The public surface is what mailconnect/__init__.py exports, and nothing is missing from it."""

from __future__ import annotations

import mailconnect


def test_all_names_exist_and_are_sorted() -> None:
    assert mailconnect.__all__ == sorted(mailconnect.__all__)
    for name in mailconnect.__all__:
        assert hasattr(mailconnect, name), name


def test_public_classes_claim_the_public_module() -> None:
    # Names are importable from the top, so users never depend on our module layout.
    for name in mailconnect.__all__:
        value = getattr(mailconnect, name)
        if isinstance(value, type):
            assert value.__module__.startswith("mailconnect"), name


def test_configuration_errors_are_not_delivery_errors() -> None:
    assert issubclass(mailconnect.ConfigurationError, ValueError)
    assert not issubclass(mailconnect.ConfigurationError, mailconnect.DeliveryError)
    assert issubclass(mailconnect.DiscoveryError, mailconnect.DeliveryError)
