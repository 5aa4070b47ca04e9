"""The theme switch without JavaScript (stamen.js switches in place and sets the same cookie)."""

from __future__ import annotations

from aiohttp import web

from services.portal.web.render import THEME_COOKIE, THEMES, safe_next


async def set_theme(request: web.Request) -> web.Response:
    form = await request.post()
    theme = str(form.get("theme", "auto"))
    response = web.Response(status=303, headers={"Location": safe_next(str(form.get("next", "/")))})
    # Not HttpOnly: stamen.js reads and writes it to switch without a reload. It holds only the choice.
    response.set_cookie(
        THEME_COOKIE, theme if theme in THEMES else "auto", max_age=365 * 86400, path="/", samesite="Lax"
    )
    return response
