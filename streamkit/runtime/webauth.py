"""Bearer-token authentication for the HTTP endpoints (workers and `streamkit dashboard`).

With `web_token` set (STREAMKIT_WEB_TOKEN), every request must carry
`Authorization: Bearer <token>`, or `?token=<token>` (what a browser can put in the URL of
the dashboard page and of its server-sent events); the comparison takes constant time
(`hmac.compare_digest`). Without it, nothing is checked: the server binds 127.0.0.1 by
default. Workers send the token to each other (proxied table queries, the dashboard's
whole-app view) and the CLI sends it to the workers.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from streamkit.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Kubernetes probes cannot carry a secret: these answer without the token, and say nothing
# but whether the worker is alive / ready. The dashboard's page and its static files hold no
# data (a browser loads them without the token; the page then sends `?token=` with every
# API call), so they are open too.
OPEN_PATHS = frozenset({"/status/live", "/status/ready", "/"})
OPEN_PREFIXES = ("/static/",)


def is_open(path: str) -> bool:
    if path in OPEN_PATHS:
        return True
    return path.startswith(OPEN_PREFIXES) and ".." not in path and "%" not in path


def token_of(settings: Settings) -> str | None:
    secret = settings.web_token
    return None if secret is None else secret.get_secret_value() or None


def auth_headers(settings: Settings) -> dict[str, str]:
    token = token_of(settings)
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def presented(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return request.query.get("token", "")


def authorized(request: web.Request, token: str) -> bool:
    return hmac.compare_digest(presented(request).encode(), token.encode())


def middlewares(settings: Settings) -> list[Any]:
    """The aiohttp middlewares of a server with these settings (none without a token)."""
    token = token_of(settings)
    if token is None:
        return []

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_open(request.path) and not authorized(request, token):
            return web.json_response(
                {"error": "unauthorized: send Authorization: Bearer <web_token>"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="streamkit"'},
            )
        return await handler(request)

    return [check]
