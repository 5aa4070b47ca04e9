"""The pages' security: sign-in required, session cookie flags, CSRF on every form, the CSP, sign-out."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from services.portal.api.context import SECURITY, Security
from services.portal.settings import PortalSettings
from services.portal.web.sessions import SESSION_COOKIE, set_cookie
from stamen.auth import AuthSettings, RateLimiter
from stamen.customers.settings import CustomerSettings
from tests.web.conftest import Browser, World

NewBrowser = Callable[[], AbstractAsyncContextManager[Browser]]


async def test_pages_need_a_session_and_carry_a_strict_csp(world: World, browser: NewBrowser) -> None:
    async with browser() as b:
        status, _ = await b.get("/worksets?state=queued")
        async with b.session.get("/worksets?state=queued", allow_redirects=False) as r:
            assert status == 303 and r.headers["Location"] == "/signin?next=%2Fworksets%3Fstate%3Dqueued"
        async with b.session.get("/live", allow_redirects=False) as r:
            assert r.status == 401
        async with b.session.get("/signin") as r:
            csp = r.headers["Content-Security-Policy"]
            assert "script-src 'self';" in csp and "style-src 'self';" in csp and "unsafe" not in csp
            assert "frame-ancestors 'none'" in csp and r.headers["X-Frame-Options"] == "DENY"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert "<script>" not in await r.text() and " style=" not in await r.text()


async def test_sign_in_cookie_csrf_and_sign_out(world: World, browser: NewBrowser) -> None:
    email, _ = await world.lab.user(world.a.id)
    async with browser() as b:
        refused = await b.post("/signin", {"email": email, "password": "Wrong-Pass-1234", "next": "/"})
        assert refused.status == 401 and SESSION_COOKIE not in refused.cookies
        signed_in = await b.sign_in(email)
        assert signed_in.status == 303 and signed_in.headers["Location"] == "/"
        cookie = signed_in.cookies[SESSION_COOKIE]
        assert (
            cookie["httponly"]
            and cookie["samesite"] == "Lax"
            and not cookie["secure"]
            and cookie["path"] == "/"
        )
        status, page = await b.get("/worksets?q=-ws")
        assert status == 200 and world.a.target.workset_id in page and world.b.target.workset_id not in page

        # CSRF: no token, a token of another browser, or another site's Origin: refused, nothing done.
        target = world.a.target.workset_id
        async with b.session.post("/worksets/bulk", data={"action": "cancel", "ids": target}) as r:
            assert r.status == 403 and "CSRF_TOKEN_INVALID" in await r.text()
        forged = await b.session.post(
            "/worksets/bulk", data={"action": "cancel", "ids": target, "csrf_token": "x" * 43}
        )
        assert forged.status == 403
        cross = await b.post(
            "/worksets/bulk", {"action": "cancel", "ids": target}, headers={"Origin": "https://evil.example"}
        )
        assert cross.status == 403
        _, page = await b.get(f"/worksets/{target}")
        assert 'data-state="submitted"' in page  # still not cancelled

        stolen = b.session.cookie_jar.filter_cookies(b.session._base_url)[SESSION_COOKIE].value  # type: ignore[arg-type]
        out = await b.post("/signout")
        assert out.status == 303 and out.headers["Location"] == "/signin?notice=signed-out"
        assert (await b.get("/worksets"))[0] == 303
    async with browser() as thief:  # the cookie of a signed-out session opens nothing
        thief.session.cookie_jar.update_cookies({SESSION_COOKIE: stolen})
        assert (await thief.get("/worksets"))[0] == 303


def test_the_session_cookie_is_secure_behind_https() -> None:
    app = web.Application()
    app[SECURITY] = Security(
        auth=AuthSettings(),
        portal=PortalSettings(portal_trust_forwarded_proto=True),
        customers=CustomerSettings(),
        limiter=RateLimiter(rate_per_second=1, burst=1),
    )
    for headers, secure in (({"X-Forwarded-Proto": "https"}, True), ({}, False)):
        request = make_mocked_request("GET", "/", headers=headers, app=app)
        response = web.Response()
        set_cookie(response, request, SESSION_COOKIE, "v", max_age=60)
        assert bool(response.cookies[SESSION_COOKIE]["secure"]) is secure
        assert (
            response.cookies[SESSION_COOKIE]["httponly"]
            and response.cookies[SESSION_COOKIE]["samesite"] == "Lax"
        )


async def test_operator_pages_are_refused_to_customers(world: World, browser: NewBrowser) -> None:
    email, _ = await world.lab.user(world.a.id)
    async with browser() as b:
        await b.sign_in(email)
        for path in (
            "/ops/customers",
            "/ops/clusters",
            "/ops/dlq",
            "/ops/regions",
            "/ops/health",
            f"/ops/dlq/{world.a.target.dead_letter_id}",
        ):
            status, page = await b.get(path)
            assert status == 403 and "AUTH_FORBIDDEN" in page, path
        refused = await b.post("/ops/clusters/local/drain")
        assert refused.status == 403
