"""Per-tenant NATS credentials: a lab system may publish only to its own intake subject.

nats-server enforces it (authorization users with publish/subscribe permissions); stamen keeps the
credentials in PostgreSQL, renders the server's authorization block from them and asks the server to
reload. Lab systems hold an NKEY seed; stamen stores only the public key.
"""

from stamen.natsauth.authorization import (
    SERVICE_USER,
    ServiceUser,
    TenantKey,
    inbox_prefix,
    intake_subject,
    render_authorization,
    reply_subject_allowed,
    tenant_permissions,
)
from stamen.natsauth.errors import NatsCredentialNotFound, NatsCredentialRequestInvalid
from stamen.natsauth.keys import generate_user_key, public_key_of
from stamen.natsauth.repository import NatsCredentialRecord
from stamen.natsauth.service import CreatedNatsCredential, NatsCredentialService

__all__ = [
    "SERVICE_USER",
    "CreatedNatsCredential",
    "NatsCredentialNotFound",
    "NatsCredentialRecord",
    "NatsCredentialRequestInvalid",
    "NatsCredentialService",
    "ServiceUser",
    "TenantKey",
    "generate_user_key",
    "inbox_prefix",
    "intake_subject",
    "public_key_of",
    "render_authorization",
    "reply_subject_allowed",
    "tenant_permissions",
]
