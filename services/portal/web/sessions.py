"""Browser sessions: a random secret in an HttpOnly cookie, the Cognito tokens server-side (portal_sessions).

Every page request verifies the session's token with the API's verifier (`Security.verifier`), so a page
knows its caller exactly as the API would from `Authorization: Bearer <token>`: same principal, same tenant,
same revocation. An access token near its expiry is renewed with the refresh token; a session unused for
`portal_session_idle_minutes` or older than `portal_session_hours` is over."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
import structlog
from aiohttp import web

from services.portal.api.auth_endpoints import sign_out_everywhere
from services.portal.api.context import SECURITY, Security
from services.portal.settings import PortalSettings
from services.portal.web.store import SessionRepository, SessionRow
from stamen.auth import Principal, cognito
from stamen.auth.errors import AuthError, TokenExpired, TokenRevoked
from stamen.service.keys import POOL

log = structlog.get_logger(__name__)

SESSION_COOKIE = "stamen_session"
RENEW_BEFORE_SECONDS = 120.0  # renew a token this long before it expires
TOUCH_EVERY_SECONDS = 60.0  # last_seen_at is written at most this often per session


def is_https(request: web.Request, settings: PortalSettings) -> bool:
    if request.secure:
        return True
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return settings.portal_trust_forwarded_proto and forwarded == "https"


def set_cookie(
    response: web.StreamResponse,
    request: web.Request,
    name: str,
    value: str,
    *,
    max_age: int | None,
    samesite: str = "Lax",
) -> None:
    settings = request.app[SECURITY].portal
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        secure=is_https(request, settings),
        samesite=samesite,
    )


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _expiry(token: str) -> datetime:
    claims = jwt.decode(token, options={"verify_signature": False})  # verified before it is stored
    return datetime.fromtimestamp(float(claims.get("exp", time.time())), UTC)


@dataclass(frozen=True)
class SignedIn:
    principal: Principal
    row: SessionRow


SIGNED_IN_KEY = web.RequestKey("signed_in", SignedIn)


def session_token(security: Security, tokens: cognito.Tokens) -> str:
    """The token a session keeps: the access token (Cognito can revoke it), or the id token where the
    deployment accepts only those (STAMEN_TOKEN_USES=id)."""
    return tokens.access_token if "access" in security.auth.accepted_token_uses() else tokens.id_token


async def start(
    request: web.Request, response: web.StreamResponse, tokens: cognito.Tokens, *, email: str
) -> Principal:
    """Verify fresh tokens, store a session (with the address signed in with, shown on the pages) and set
    its cookie. Raises AuthError (nothing stored)."""
    security = request.app[SECURITY]
    token = session_token(security, tokens)
    principal = await (await security.verifier()).verify(token)
    secret = secrets.token_urlsafe(32)
    hours = security.portal.portal_session_hours
    async with request.app[POOL].acquire() as conn:
        await SessionRepository(conn).add(
            id_hash=_hash(secret),
            subject=principal.subject,
            username=email,
            token=token,
            refresh_token=tokens.refresh_token,
            token_expires_at=_expiry(token),
            expires_at=datetime.now(UTC) + timedelta(hours=hours),
        )
    set_cookie(response, request, SESSION_COOKIE, secret, max_age=int(hours * 3600))
    log.info("portal.signed_in", subject=principal.subject, kind=principal.kind, tenant=principal.customer_id)
    return principal


async def resolve(request: web.Request) -> SignedIn | None:
    """The signed-in caller of this request, or None (no cookie, over, revoked, or its token refused)."""
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret or len(secret) > 100:
        return None
    security = request.app[SECURITY]
    idle = security.portal.portal_session_idle_minutes * 60
    pool = request.app[POOL]
    async with pool.acquire() as conn:
        row = await SessionRepository(conn).live(_hash(secret), idle)
    if row is None:
        return None
    try:
        if (row.token_expires_at - datetime.now(UTC)).total_seconds() < RENEW_BEFORE_SECONDS:
            row = await _renew(request, row)
        if security.signed_out(row.token):
            raise TokenRevoked("this session was signed out")
        principal = await (await security.verifier()).verify(row.token)
    except AuthError as exc:
        log.info("portal.session_ended", reason=exc.code)
        async with pool.acquire() as conn:
            await SessionRepository(conn).delete(row.id_hash)
        return None
    if (datetime.now(UTC) - row.last_seen_at).total_seconds() > TOUCH_EVERY_SECONDS:
        async with pool.acquire() as conn:
            await SessionRepository(conn).touch(row.id_hash)
    return SignedIn(principal, row)


async def _renew(request: web.Request, row: SessionRow) -> SessionRow:
    if not row.refresh_token:
        raise TokenExpired("the session's token expired and it has no refresh token")
    security = request.app[SECURITY]
    pool = await security.user_pool()
    tokens = await cognito.refresh(
        security.cognito, app_client_id=pool.app_client_id, refresh_token=row.refresh_token
    )
    token = session_token(security, tokens)
    expires = _expiry(token)
    async with request.app[POOL].acquire() as conn:
        await SessionRepository(conn).renew_tokens(
            row.id_hash, token=token, refresh_token=tokens.refresh_token, token_expires_at=expires
        )
    return SessionRow(**{**row.__dict__, "token": token, "token_expires_at": expires})


async def end(request: web.Request, response: web.StreamResponse, signed_in: SignedIn | None) -> None:
    """Sign out: Cognito signs the user out everywhere, the session row goes, the cookie is cleared."""
    response.del_cookie(SESSION_COOKIE, path="/")
    if signed_in is None:
        return
    async with request.app[POOL].acquire() as conn:
        await SessionRepository(conn).delete(signed_in.row.id_hash)
    if signed_in.principal.username:
        try:
            await sign_out_everywhere(
                request.app[SECURITY], signed_in.row.token, signed_in.principal.username
            )
        except AuthError as exc:  # the session is gone here whatever Cognito says
            log.warning("portal.sign_out_incomplete", error=str(exc))
