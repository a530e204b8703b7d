"""Where the client finds the API and which tokens it sends: `LEARNGENE_URL`, `LEARNGENE_API_TOKEN`,
`LEARNGENE_ADMIN_TOKEN` (and `LEARNGENE_PORT`, the port `learngene serve` listens on, for the default URL).

The client's own settings, apart from the server's (`jobs.settings`): reading them imports neither torch nor a
server framework, so the light install (the distribution's core) has them."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8000


class ClientSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEARNGENE_", env_file=".env", extra="ignore")

    url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("LEARNGENE_URL", "LEARNGENE_API_URL"),  # the second: its name until 0.1
        description="the API's base URL; unset: http://127.0.0.1 at LEARNGENE_PORT (8000)",
    )
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535, description="the port `learngene serve` listens on")
    api_token: SecretStr | None = Field(
        default=None, description="the bearer token the client sends (one of the server's LEARNGENE_CLIENT_TOKENS)"
    )
    admin_token: SecretStr | None = Field(default=None, description="the bearer token of the admin calls")

    @property
    def base_url(self) -> str:
        return self.url or f"http://127.0.0.1:{self.port}"

    def token(self, *, admin: bool = False) -> str | None:
        secret = self.admin_token if admin else self.api_token
        return secret.get_secret_value() if secret else None


# The variable each kind of call takes its token from: named by the CLI when the API answers 401 or 403.
TOKEN_VARIABLE = {False: "LEARNGENE_API_TOKEN", True: "LEARNGENE_ADMIN_TOKEN"}
