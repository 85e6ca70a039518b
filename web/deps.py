"""Request dependencies shared by every service's router: the pool and the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from directory.store import RegisteredOrg
from web.errors import ApiError
from web.quota import OrgQuota
from web.tokens import TokenCache, org_for_token

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
) -> AsyncIterator[RegisteredOrg]:
    """The organisation behind the bearer token (401 if none), within its quota (429).

    A token found is trusted for ``REFERRALNET_TOKEN_CACHE_SECONDS`` at most, so revocation,
    rotation and expiry reach this process within seconds. The organisation's share of
    the API (``web.quota``) is held until the request is done.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(
            401,
            "unauthenticated",
            "send 'Authorization: Bearer <token>' with your organisation's token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    cache: TokenCache = request.app.state.token_cache
    org = cache.get(credentials.credentials)
    if org is None:
        async with pool(request).connection() as conn:
            org = await org_for_token(conn, credentials.credentials)
        if org is None:
            raise ApiError(
                401,
                "unknown-token",
                "this token belongs to no registered organisation, or was revoked or expired",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        cache.put(credentials.credentials, org)
    quota: OrgQuota = request.app.state.quota
    refused = quota.admit(org.id)
    if refused is not None:
        why, wait = refused
        raise ApiError(
            429,
            "too-many-requests",
            f"{why}; nothing was done, retry after {wait} s",
            headers={"Retry-After": str(wait)},
        )
    try:
        yield org
    finally:
        quota.release(org.id)


Caller = Annotated[RegisteredOrg, Depends(caller)]
