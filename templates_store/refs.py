"""Template-set references: `name` (latest), `name@3` (a version), `name@prod` (an alias).

Resolving a reference gives a `ResolvedRef` (name, version, manifest digest): what a job records, so that moving an
alias later never changes what an accepted job uses.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
LATEST = "latest"


class StoreError(Exception):
    """Base of the store's errors."""


class RefError(StoreError, ValueError):
    """A reference, name or alias that is malformed."""


class NotFoundError(StoreError, LookupError):
    """A name, version or alias that does not exist."""


class ConflictError(StoreError):
    """An operation refused because of the store's state (e.g. deleting a version an alias points to)."""


class BrokenVersion(ConflictError):
    """A version folder that exists but cannot be used (empty, or its manifest missing or unreadable)."""


def is_number(text: str) -> bool:
    """ASCII digits only: `str.isdigit()` holds for '²' and '①' too, which `int()` refuses, and `int()` reads '１'
    (a full-width one) as 1."""
    return text.isascii() and text.isdigit()


def check_name(name: str, what: str = "name") -> str:
    if not NAME_RE.match(name or "") or ".." in name:
        raise RefError(f"{what} {name!r} must be 1-64 characters of a-z, 0-9, '.', '_', '-', starting alphanumeric")
    return name


def check_alias(alias: str) -> str:
    check_name(alias, "alias")
    if is_number(alias):
        raise RefError(f"alias {alias!r} must not be a number (numbers are versions)")
    if alias == LATEST:
        raise RefError(f"alias {LATEST!r} is reserved: it always means the highest version")
    return alias


def parse_ref(ref: str) -> tuple[str, int | str]:
    """`name` -> (name, 'latest'); `name@3` -> (name, 3); `name@prod` -> (name, 'prod')."""
    if not isinstance(ref, str) or not ref or len(ref) > 140:
        raise RefError(f"template set reference {ref!r} is empty or too long")
    name, sep, selector = ref.partition("@")
    check_name(name)
    if not sep:
        return name, LATEST
    if is_number(selector):
        version = int(selector)
        if version < 1:
            raise RefError(f"version in {ref!r} must be >= 1")
        return name, version
    if selector != LATEST:
        check_name(selector, "alias")
    return name, selector


class ResolvedRef(BaseModel):
    """An immutable pointer to one stored version: name, version and the sha256 of its manifest."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int
    digest: str

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"
