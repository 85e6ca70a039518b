"""Request dependencies shared by every service's router: the pool and the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from directory.store import RegisteredOrg, org_by_token
from web.errors import ApiError

_bearer = HTTPBearer(auto_error=False, description="One token per organisation")


def pool(request: Request) -> AsyncConnectionPool[AsyncConnection[Any]]:
    """The app's connection pool (created by the gateway's lifespan)."""
    return request.app.state.pool  # type: ignore[no-any-return]


async def connection(
    request: Request,
) -> AsyncIterator[AsyncConnection[Any]]:
    async with pool(request).connection() as conn:
        yield conn


Conn = Annotated[AsyncConnection[Any], Depends(connection)]
"""A pooled connection held for the whole request."""
Pool = Annotated[AsyncConnectionPool[AsyncConnection[Any]], Depends(pool)]
"""The pool itself, for routes that take connections only while they use them."""


async def caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> RegisteredOrg:
    """The organisation behind the bearer token, or 401."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(
            401,
            "unauthenticated",
            "send 'Authorization: Bearer <token>' with your organisation's token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    cache: dict[str, RegisteredOrg] = request.app.state.token_cache
    org = cache.get(credentials.credentials)
    if org is None:
        async with pool(request).connection() as conn:
            org = await org_by_token(conn, credentials.credentials)
        if org is None:
            raise ApiError(
                401,
                "unknown-token",
                "this token belongs to no registered organisation",
                headers={"WWW-Authenticate": "Bearer"},
            )
        cache[credentials.credentials] = org
    return org


Caller = Annotated[RegisteredOrg, Depends(caller)]
