"""Dependencies injected into the routes: the application's `Services` (whole, for a route that uses several of
them; one of them, for a route that reads only it), bearer auth (admin and client tokens)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from jobs.services import Services
from jobs.settings import Settings
from jobs.store import JobStore
from storage.artifacts import Artifacts
from templates_store import TemplateStore


def get_services(request: Request) -> Services:
    return request.app.state.services


def get_settings(request: Request) -> Settings:
    return get_services(request).settings


def get_jobs(request: Request) -> JobStore:
    return get_services(request).jobs


def get_store(request: Request) -> TemplateStore:
    return get_services(request).store


def get_artifacts(request: Request) -> Artifacts:
    return get_services(request).artifacts


# The two bearer schemes of the OpenAPI document (`components.securitySchemes`). They only read the header
# (auto_error=False); the answers to missing or wrong tokens (401 with WWW-Authenticate, 403) are ours, below.
ADMIN_SCHEME = HTTPBearer(
    scheme_name="adminToken", auto_error=False,
    description="LEARNGENE_ADMIN_TOKEN of the deployment; without it set, the admin endpoints answer 403",
)  # fmt: skip
CLIENT_SCHEME = HTTPBearer(
    scheme_name="clientToken", auto_error=False,
    description="one of the tokens in LEARNGENE_CLIENT_TOKENS (name -> token); required only where the deployment sets "
    "them, and then each client sees only its own jobs",
)  # fmt: skip


def bearer(credentials: HTTPAuthorizationCredentials | None, what: str) -> str:
    """The token of an `Authorization: Bearer <token>` header, or 401."""
    if credentials is None:  # no header, another scheme, or no token after "Bearer"
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"{what} need 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return credentials.credentials


def matches(token: str, secret: SecretStr) -> bool:
    """Constant-time comparison: how long it takes says nothing about how much of the token was right."""
    return hmac.compare_digest(token.encode(), secret.get_secret_value().encode())


def require_admin(
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(ADMIN_SCHEME)],
) -> None:
    """Bearer token from LEARNGENE_ADMIN_TOKEN: 401 without credentials, 403 with wrong ones."""
    if settings.admin_token is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin endpoints are disabled: LEARNGENE_ADMIN_TOKEN is not set")
    if not matches(bearer(credentials, "admin endpoints"), settings.admin_token):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid admin token")


def current_client(
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(CLIENT_SCHEME)],
) -> str | None:
    """The calling client's name when LEARNGENE_CLIENT_TOKENS is set (401/403 otherwise); None when it is not.
    Every configured token is compared, so the time taken does not depend on which one matched."""
    if not settings.client_tokens:
        return None
    token = bearer(credentials, "requests")
    found = [name for name, secret in settings.client_tokens.items() if matches(token, secret)]
    if not found:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid client token")
    return found[0]


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClientDep = Annotated[str | None, Depends(current_client)]
JobsDep = Annotated[JobStore, Depends(get_jobs)]
StoreDep = Annotated[TemplateStore, Depends(get_store)]
ArtifactsDep = Annotated[Artifacts, Depends(get_artifacts)]
ServicesDep = Annotated[Services, Depends(get_services)]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=200, pattern=r"^[\x21-\x7e]+$", description="makes retries safe"),
]
