"""Authentication errors. Each has a stable `code` (what the API puts in `{code, message, details}`) and
the HTTP status it maps to. Messages never include the token or key."""

from __future__ import annotations

from typing import Any

from stamen.errors import CodedError


class AuthError(CodedError):
    code = "AUTH_ERROR"
    http_status = 401


# --- bearer tokens (Cognito JWTs) -------------------------------------------------------------------
class TokenMissing(AuthError):
    code = "AUTH_TOKEN_MISSING"


class TokenMalformed(AuthError):
    code = "AUTH_TOKEN_MALFORMED"


class TokenAlgorithmNotAllowed(AuthError):
    """`alg` is not RS256 (e.g. `none`, or HS256 with the public key as the secret)."""

    code = "AUTH_TOKEN_ALG_NOT_ALLOWED"


class UnknownSigningKey(AuthError):
    """The `kid` is not in the pool's JWKS, even after refreshing it."""

    code = "AUTH_TOKEN_UNKNOWN_KID"


class BadSignature(AuthError):
    code = "AUTH_TOKEN_BAD_SIGNATURE"


class TokenExpired(AuthError):
    code = "AUTH_TOKEN_EXPIRED"


class TokenNotYetValid(AuthError):
    code = "AUTH_TOKEN_NOT_YET_VALID"


class WrongIssuer(AuthError):
    code = "AUTH_TOKEN_WRONG_ISSUER"


class WrongAudience(AuthError):
    """`aud` (id token) or `client_id` (access token) is not one of our app clients."""

    code = "AUTH_TOKEN_WRONG_AUDIENCE"


class WrongTokenUse(AuthError):
    code = "AUTH_TOKEN_WRONG_USE"


class TokenRevoked(AuthError):
    """Cognito no longer accepts the access token (the user signed out everywhere)."""

    code = "AUTH_TOKEN_REVOKED"


class UserDisabled(AuthError):
    """The token verifies, but its user has been disabled or deleted in the user pool since it was issued."""

    code = "AUTH_USER_DISABLED"


class TenantClaimMissing(AuthError):
    """A non-operator token without `custom:customer_id`: it cannot be scoped to a tenant."""

    code = "AUTH_TENANT_CLAIM_MISSING"


class TenantClaimInvalid(AuthError):
    code = "AUTH_TENANT_CLAIM_INVALID"


class JwksUnavailable(AuthError):
    """The pool's JWKS could not be fetched: not the caller's fault."""

    code = "AUTH_JWKS_UNAVAILABLE"
    http_status = 503


# --- API keys ---------------------------------------------------------------------------------------
class ApiKeyInvalid(AuthError):
    """Not a key we issued (wrong format, unknown prefix or wrong secret)."""

    code = "API_KEY_INVALID"


class ApiKeyRevoked(AuthError):
    code = "API_KEY_REVOKED"


class ApiKeyExpired(AuthError):
    code = "API_KEY_EXPIRED"


class ApiKeyPepperMissing(AuthError):
    """STAMEN_API_KEY_PEPPER is empty: keys would be hashed with a key everyone knows, so none are made or
    checked (and a portal with auth on refuses to start)."""

    code = "API_KEY_PEPPER_MISSING"
    http_status = 503


class ApiKeyNotFound(AuthError):
    """Management call on a key that does not exist *for this tenant* (other tenants' keys look absent)."""

    code = "API_KEY_NOT_FOUND"
    http_status = 404


class ApiKeyRequestInvalid(AuthError):
    code = "API_KEY_REQUEST_INVALID"
    http_status = 400


# --- Cognito user flows -----------------------------------------------------------------------------
class LoginFailed(AuthError):
    """Wrong username or password (Cognito does not say which; neither do we)."""

    code = "AUTH_LOGIN_FAILED"


class NewPasswordRequired(LoginFailed):
    """The password was right, but it is a temporary one (an invited user): answer the challenge with a new
    password and `details.session` (POST /api/v1/auth/new-password, `stamen login`, the portal's sign-in page).
    A LoginFailed with `details.challenge`, as every other challenge, so callers that handle those still do."""

    code = "AUTH_NEW_PASSWORD_REQUIRED"


class UserNotConfirmed(AuthError):
    code = "AUTH_USER_NOT_CONFIRMED"
    http_status = 403


class UserExists(AuthError):
    code = "AUTH_USER_EXISTS"
    http_status = 409


class UserNotFound(AuthError):
    code = "AUTH_USER_NOT_FOUND"
    http_status = 404


class PasswordPolicy(AuthError):
    code = "AUTH_PASSWORD_POLICY"
    http_status = 400


class IdentityRequestInvalid(AuthError):
    """Cognito refused the request's input (InvalidParameterException), e.g. a username it does not take
    for an e-mail address; the message carries Cognito's reason."""

    code = "AUTH_REQUEST_INVALID"
    http_status = 400


class CodeInvalid(AuthError):
    """Confirmation or reset code wrong or expired."""

    code = "AUTH_CODE_INVALID"
    http_status = 400


class IdentityProviderError(AuthError):
    """Cognito answered with something we do not map; `details.aws_code` says what."""

    code = "AUTH_IDP_ERROR"
    http_status = 502


# --- authorisation and limits -----------------------------------------------------------------------
class Forbidden(AuthError):
    code = "AUTH_FORBIDDEN"
    http_status = 403


class RateLimited(AuthError):
    code = "RATE_LIMITED"
    http_status = 429

    def __init__(self, message: str, *, retry_after: float, **details: Any) -> None:
        super().__init__(message, retry_after=retry_after, **details)
        self.retry_after = retry_after
