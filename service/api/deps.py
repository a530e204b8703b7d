"""Dependencies injected into the routes: settings, job records, the template and checkpoint stores, the dispatcher,
admin auth."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status
from pydantic import SecretStr

from jobs.dispatch import Dispatcher
from jobs.settings import Settings
from jobs.store import JobStore
from storage.artifacts import Artifacts
from templates_store import TemplateStore


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_jobs(request: Request) -> JobStore:
    return request.app.state.jobs


def get_store(request: Request) -> TemplateStore:
    return request.app.state.store


def get_artifacts(request: Request) -> Artifacts:
    return request.app.state.artifacts


def get_dispatcher(request: Request) -> Dispatcher:
    return request.app.state.dispatcher


def bearer(authorization: str | None, what: str) -> str:
    """The token of an `Authorization: Bearer <token>` header, or 401."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, f"{what} need 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    return token


def matches(token: str, secret: SecretStr) -> bool:
    """Constant-time comparison: how long it takes says nothing about how much of the token was right."""
    return hmac.compare_digest(token.encode(), secret.get_secret_value().encode())


def require_admin(
    settings: Annotated[Settings, Depends(get_settings)],
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    """Bearer token from LEARNGENE_ADMIN_TOKEN: 401 without credentials, 403 with wrong ones."""
    if settings.admin_token is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin endpoints are disabled: LEARNGENE_ADMIN_TOKEN is not set")
    if not matches(bearer(authorization, "admin endpoints"), settings.admin_token):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid admin token")


def current_client(
    settings: Annotated[Settings, Depends(get_settings)],
    authorization: Annotated[str | None, Header()] = None,
) -> str | None:
    """The calling client's name when LEARNGENE_CLIENT_TOKENS is set (401/403 otherwise); None when it is not.
    Every configured token is compared, so the time taken does not depend on which one matched."""
    if not settings.client_tokens:
        return None
    token = bearer(authorization, "requests")
    found = [name for name, secret in settings.client_tokens.items() if matches(token, secret)]
    if not found:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid client token")
    return found[0]


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClientDep = Annotated[str | None, Depends(current_client)]
JobsDep = Annotated[JobStore, Depends(get_jobs)]
StoreDep = Annotated[TemplateStore, Depends(get_store)]
ArtifactsDep = Annotated[Artifacts, Depends(get_artifacts)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=200, pattern=r"^[\x21-\x7e]+$", description="makes retries safe"),
]
