"""mailconnect: send an application's e-mail through each customer company's own mail server."""

from mailconnect.diagnosis import Actor, Cause, Diagnosis, Stage, explain
from mailconnect.discovery import Candidate, Discovery, discover
from mailconnect.errors import (
    CatalogueError,
    ConfigurationError,
    DeliveryError,
    DiscoveryError,
    MailconnectError,
)
from mailconnect.findings import Finding, Severity, blocking
from mailconnect.probe import AutoReport, Report, Timeouts, probe, probe_candidates
from mailconnect.providers import Catalogue, Provider, load_catalogue
from mailconnect.rules import lint
from mailconnect.settings import AuthMethod, ConnectionSettings, Host, Security, Sender
from mailconnect.smtp import TlsPolicy

__version__ = "0.1.0"

__all__ = [
    "Actor",
    "AuthMethod",
    "AutoReport",
    "Candidate",
    "Catalogue",
    "CatalogueError",
    "Cause",
    "ConfigurationError",
    "ConnectionSettings",
    "DeliveryError",
    "Diagnosis",
    "Discovery",
    "DiscoveryError",
    "Finding",
    "Host",
    "MailconnectError",
    "Provider",
    "Report",
    "Security",
    "Sender",
    "Severity",
    "Stage",
    "Timeouts",
    "TlsPolicy",
    "__version__",
    "blocking",
    "discover",
    "explain",
    "lint",
    "load_catalogue",
    "probe",
    "probe_candidates",
]
