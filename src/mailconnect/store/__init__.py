"""Storage: SQLAlchemy 2 models, Alembic migrations and repository helpers.

Start-up calls :func:`open_database` (create the engine, apply pending migrations); request
handlers and workers take sessions from :func:`session_factory` and call the repository
functions, which always take the tenant's id first.

Modules: ``engine`` (SQLite pragmas, PostgreSQL options), ``models`` (tables), ``states`` (closed
vocabularies), ``migrate`` (Alembic, programmatic), ``tenants`` and ``connections`` (repository),
``credentials`` (encrypted connection secrets), ``errors`` (NotFound), ``ids`` (row ids
that grow with time), ``bulk`` (one statement for many rows).
"""

# The service's tables (API keys, webhooks) are part of the one schema the migrations build.
from mailconnect.store import service_models as _service_models  # noqa: F401
from mailconnect.store.connections import (
    Limits,
    create_connection,
    delete_connection,
    get_connection,
    list_connections,
    require_connection,
    set_connection_status,
    update_connection,
)
from mailconnect.store.credentials import (
    RotationReport,
    SecretAudit,
    SecretProblem,
    audit_secrets,
    delete_secret,
    load_secret,
    rotate_secrets,
    store_secret,
)
from mailconnect.store.engine import create_engine, session_factory
from mailconnect.store.errors import NotFound
from mailconnect.store.migrate import (
    SchemaStatus,
    downgrade,
    head_revision,
    open_database,
    pending_model_changes,
    schema_status,
    upgrade,
)
from mailconnect.store.models import (
    Attempt,
    Base,
    Connection,
    ConnectionSecret,
    Message,
    MessageContent,
    MessageRecipient,
    RateEvent,
    SessionLease,
    Tenant,
)
from mailconnect.store.states import (
    AttemptOutcome,
    ConnectionStatus,
    MessageState,
    RecipientState,
    SecretPurpose,
)
from mailconnect.store.tenants import (
    create_tenant,
    delete_tenant,
    get_tenant,
    get_tenant_by_external_id,
    list_tenants,
    require_tenant,
)

__all__ = [
    "Attempt",
    "AttemptOutcome",
    "Base",
    "Connection",
    "ConnectionSecret",
    "ConnectionStatus",
    "Limits",
    "Message",
    "MessageContent",
    "MessageRecipient",
    "MessageState",
    "NotFound",
    "RateEvent",
    "RecipientState",
    "RotationReport",
    "SchemaStatus",
    "SecretAudit",
    "SecretProblem",
    "SecretPurpose",
    "SessionLease",
    "Tenant",
    "audit_secrets",
    "create_connection",
    "create_engine",
    "create_tenant",
    "delete_connection",
    "delete_secret",
    "delete_tenant",
    "downgrade",
    "get_connection",
    "get_tenant",
    "get_tenant_by_external_id",
    "head_revision",
    "list_connections",
    "list_tenants",
    "load_secret",
    "open_database",
    "pending_model_changes",
    "require_connection",
    "require_tenant",
    "rotate_secrets",
    "schema_status",
    "session_factory",
    "set_connection_status",
    "store_secret",
    "update_connection",
    "upgrade",
]
