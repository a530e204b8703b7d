"""A stored checkpoint as an HTTP response: the file itself (local artifacts), a byte stream from object storage, or
a redirect to a short-lived presigned URL. `ETag` is the sha256, `Range` is honoured (one range; RFC 9110 lets a
server answer others with the whole representation), `If-None-Match` is answered by the caller before any I/O."""

from __future__ import annotations

import re

from fastapi import HTTPException, status
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from storage.artifacts import Artifacts, LocalArtifacts, S3Artifacts

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a single `Range: bytes=a-b | a- | -n`, None for the whole file; 416 when it starts past
    the end. Anything else (several ranges, other units) is ignored: the whole file is sent."""
    match = RANGE.match((header or "").strip())
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # the last n bytes
        start, end = max(size - int(last), 0), size
    else:
        start, end = int(first), size if last == "" else min(int(last) + 1, size)
    if start >= size or start >= end:
        raise HTTPException(
            status.HTTP_416_RANGE_NOT_SATISFIABLE, f"the range does not overlap the {size} bytes of the checkpoint",
            headers={"Content-Range": f"bytes */{size}"},
        )  # fmt: skip
    return start, end


def checkpoint_response(
    artifacts: Artifacts, sha256: str, *, etag: str, filename: str, method: str, range_header: str | None,
    presign_s: int | None,
) -> Response:  # fmt: skip
    gone = HTTPException(status.HTTP_410_GONE, "the checkpoint is no longer stored")
    headers = {"ETag": etag}
    if isinstance(artifacts, LocalArtifacts):
        path = artifacts.path(sha256)
        if not path.is_file():
            raise gone
        return FileResponse(path, media_type="application/octet-stream", filename=filename, headers=headers)
    assert isinstance(artifacts, S3Artifacts)
    if presign_s is not None:
        return RedirectResponse(artifacts.sign(sha256, presign_s), status.HTTP_307_TEMPORARY_REDIRECT, headers=headers)
    size = artifacts.size(sha256)
    if size is None:
        raise gone
    span = byte_range(range_header, size)
    start, end = span or (0, size)
    headers.update({
        "Accept-Ranges": "bytes", "Content-Length": str(end - start),
        "Content-Disposition": f'attachment; filename="{filename}"',
    })  # fmt: skip
    code = status.HTTP_200_OK
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        code = status.HTTP_206_PARTIAL_CONTENT
    if method == "HEAD":
        return Response(status_code=code, headers=headers, media_type="application/octet-stream")
    body = artifacts.stream(sha256, start, end)
    return StreamingResponse(body, status_code=code, headers=headers, media_type="application/octet-stream")
