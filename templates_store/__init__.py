"""Versioned, verified, atomically published template sets (a small model registry for learngenes)."""

from templates_store.backend import LocalBackend, StorageBackend
from templates_store.refs import (
    BrokenVersion,
    ConflictError,
    NotFoundError,
    RefError,
    ResolvedRef,
    StoreError,
    parse_ref,
)
from templates_store.store import TemplateStore
from templates_store.views import AliasRecord, CardSummary, VersionInfo

__all__ = [
    "AliasRecord",
    "BrokenVersion",
    "CardSummary",
    "ConflictError",
    "LocalBackend",
    "NotFoundError",
    "RefError",
    "ResolvedRef",
    "StorageBackend",
    "StoreError",
    "TemplateStore",
    "VersionInfo",
    "parse_ref",
]
