"""Cursor pagination shared by the list endpoints: opaque cursors, the `next` link, and their 422s.

A cursor is the base64url of a small JSON array naming the last item a page showed (a job's creation time and id, a
template set's name and version); the next page starts strictly after it. It is validated strictly and not signed:
it only says where a list resumes, and every filter (a client's own jobs included) is applied again on each page, so
a forged cursor shows nothing that a request without one would not.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Query, Request
from fastapi.exceptions import RequestValidationError

MAX_LIMIT = 500
MAX_CURSOR = 512  # characters: far more than any cursor this API writes

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"items per page (1 to {MAX_LIMIT})")]
Cursor = Annotated[
    str | None,
    Query(max_length=MAX_CURSOR, description="where the page starts: the cursor of the previous page's `next` link"),
]


class CursorError(ValueError):
    pass


def encode_cursor(*values: str | int | float) -> str:
    raw = json.dumps(list(values), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, types: Sequence[type]) -> list[Any]:
    """The values `encode_cursor` wrote, of these types in this order; a 422 naming `cursor` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError):  # not base64url, not UTF-8, not JSON (UnicodeDecodeError is a ValueError)
        raise invalid("cursor", "not a cursor of this list: pass the `next` link's cursor unchanged") from None
    if not (isinstance(values, list) and len(values) == len(types)):
        raise invalid("cursor", "not a cursor of this list: pass the `next` link's cursor unchanged")
    decoded = []
    for value, kind in zip(values, types, strict=True):
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            value = float(value) if abs(value) < 1e300 else math.inf  # a 310-digit int overflows float()
            ok = math.isfinite(value)
        else:
            ok = type(value) is kind
        if not ok:
            raise invalid("cursor", "not a cursor of this list: pass the `next` link's cursor unchanged")
        decoded.append(value)
    return decoded


def invalid(field: str, message: str) -> RequestValidationError:
    """The same 422 as FastAPI's own for a query parameter, naming it."""
    return RequestValidationError([{"loc": ("query", field), "msg": message, "type": "value_error"}])


def next_link(request: Request, route_name: str, params: Mapping[str, Any], cursor: str | None) -> str | None:
    """The absolute URL of the next page: the same filters and limit, and the cursor; None on the last page."""
    if cursor is None:
        return None
    query = {name: value for name, value in params.items() if value is not None} | {"cursor": cursor}
    return str(request.url_for(route_name).replace(query=urlencode(query, doseq=True)))
