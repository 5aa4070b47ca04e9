"""Authentication and authorisation: principals, Cognito token verification and user flows, API keys,
rate limiting. See docs/customers-and-auth.md."""

from stamen.auth.api_keys import ApiKeyService, CreatedApiKey, generate_key, parse_key
from stamen.auth.errors import AuthError
from stamen.auth.principal import Principal, local_demo_principal
from stamen.auth.ratelimit import Decision, RateLimiter, TokenBucket
from stamen.auth.settings import AuthSettings
from stamen.auth.tokens import CognitoTokenVerifier, JwksCache

__all__ = [
    "ApiKeyService",
    "AuthError",
    "AuthSettings",
    "CognitoTokenVerifier",
    "CreatedApiKey",
    "Decision",
    "JwksCache",
    "Principal",
    "RateLimiter",
    "TokenBucket",
    "generate_key",
    "local_demo_principal",
    "parse_key",
]
