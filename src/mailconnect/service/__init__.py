"""The multi-tenant HTTP service: REST API v1, the in-process worker, webhooks, metrics, demo.

Modules: ``settings`` (MAILCONNECT_* and the TOML file), ``runtime`` (start-up checks, the
background worker and webhook loop), ``app`` (the FastAPI app), ``routes/`` (one router per
resource), ``schemas`` (request and response bodies), ``auth`` (API keys, the operator token),
``problems`` (RFC 9457 errors), ``webhooks`` (events, signatures, deliveries), ``metrics``,
``logs`` (JSON lines), ``middleware``, ``ratelimit``, ``demo`` and ``server`` (uvicorn).
"""

from mailconnect.service.app import create_app
from mailconnect.service.runtime import Runtime, StartupRefused
from mailconnect.service.server import serve
from mailconnect.service.settings import ServiceSettings, load_settings
from mailconnect.service.webhooks import SIGNATURE_HEADER, sign, verify_signature

__all__ = [
    "SIGNATURE_HEADER",
    "Runtime",
    "ServiceSettings",
    "StartupRefused",
    "create_app",
    "load_settings",
    "serve",
    "sign",
    "verify_signature",
]
