"""A stored file of a checkpoint as an HTTP response: the file itself (local artifacts), a byte stream from object
storage, or a redirect to a short-lived presigned URL. `ETag` is the sha256, `Range` is honoured (one range; RFC 9110
lets a server answer others with the whole representation), `If-None-Match` is answered by the caller before any I/O.

A folder (a checkpoint's, a template-set version's) as one uncompressed tar, streamed: headers from the stdlib
`tarfile`, the files' bytes straight from storage, so its length is known before the first byte and nothing is held
in memory."""

from __future__ import annotations

import functools
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath

from fastapi import HTTPException, status
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from storage.artifacts import SUFFIX, Artifacts, S3Artifacts

# ASCII digits (`\d` is any script's), at most 19: no file has more bytes, and int() refuses 4300 digits
RANGE = re.compile(r"^bytes=([0-9]{0,19})-([0-9]{0,19})$")


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
            status.HTTP_416_RANGE_NOT_SATISFIABLE,
            f"the range does not overlap the {size} bytes of the checkpoint",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, end


MEDIA_TYPES = {
    SUFFIX: "application/octet-stream",
    ".json": "application/json",
    ".md": "text/markdown; charset=utf-8",
    ".sig": "application/vnd.dev.sigstore.bundle.v0.3+json",  # model-signing writes a Sigstore bundle
}


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 If-None-Match: `*` matches any existing representation; otherwise a list of (weak) entity tags."""
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def file_response(
    artifacts: Artifacts, sha256: str, *, filename: str, method: str, if_none_match: str | None,
    range_header: str | None, presign_s: int | None, suffix: str = SUFFIX,
) -> Response:  # fmt: skip
    """A stored file by its sha256 (its ETag): 304 when the client has it, else the file, a range of it, or (from
    object storage, when presigning is on) a redirect to a presigned URL."""
    etag = f'"{sha256}"'
    if if_none_match is not None and etag_matches(if_none_match, etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    what = "the checkpoint" if suffix == SUFFIX else filename
    headers = {"ETag": etag}
    media_type = MEDIA_TYPES[suffix]
    size = artifacts.size(sha256, suffix)
    if size is None:  # before any redirect too: a presigned URL to a deleted object would answer 404, not 410
        raise HTTPException(status.HTTP_410_GONE, f"{what} is no longer stored")
    if presign_s is not None and isinstance(artifacts, S3Artifacts):
        return RedirectResponse(
            artifacts.sign(sha256, presign_s, suffix), status.HTTP_307_TEMPORARY_REDIRECT, headers=headers
        )
    # Local files and objects alike: one reading of Range (a single range; anything else is the whole file), one
    # 416, both as problems.
    span = byte_range(range_header, size)
    start, end = span or (0, size)
    headers.update(
        {
            "Accept-Ranges": "bytes",
            "Content-Length": str(end - start),
            "Content-Disposition": f'attachment; filename="{filename}"',
        }
    )
    code = status.HTTP_200_OK
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        code = status.HTTP_206_PARTIAL_CONTENT
    if method == "HEAD":
        return Response(status_code=code, headers=headers, media_type=media_type)
    body = artifacts.stream(sha256, start, end, suffix)
    return StreamingResponse(body, status_code=code, headers=headers, media_type=media_type)


@dataclass(frozen=True)
class TarMember:
    """One file of a tar: its size, known before the first byte, and its bytes as they are read."""

    size: int
    chunks: Callable[[], Iterable[bytes]]


def stored_members(artifacts: Artifacts, files: dict[str, dict]) -> dict[str, TarMember]:
    """A checkpoint folder's files (name -> {sha256, bytes}) as tar members read from the artifact store; 410
    before any byte when one is gone."""
    members = {}
    for name, entry in files.items():
        suffix = PurePath(name).suffix
        if artifacts.size(entry["sha256"], suffix) != entry["bytes"]:
            raise HTTPException(status.HTTP_410_GONE, f"{name} is no longer stored")
        members[name] = TarMember(entry["bytes"], functools.partial(artifacts.stream, entry["sha256"], suffix=suffix))
    return members


def local_members(paths: dict[str, Path], blobs: dict[str, bytes]) -> dict[str, TarMember]:
    """Local files (name -> path) and small ones held in memory (name -> bytes) as tar members."""
    members = {name: TarMember(path.stat().st_size, functools.partial(_read, path)) for name, path in paths.items()}
    return members | {name: TarMember(len(data), functools.partial(iter, [data])) for name, data in blobs.items()}


def _read(path: Path, chunk: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while piece := f.read(chunk):
            yield piece


def tar_response(members: dict[str, TarMember], *, top: str, mtime: int, etag: str) -> Response:
    """`members` as `top/<name>` in one tar, its length known before the first byte."""
    folder = tarfile.TarInfo(top)
    folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, mtime
    parts: list[bytes | tuple[str, TarMember]] = [_header(folder)]
    for name, member in members.items():
        info = tarfile.TarInfo(f"{top}/{name}")
        info.size, info.mode, info.mtime = member.size, 0o644, mtime
        parts += [_header(info), (name, member), _padding(member.size)]
    length = sum(len(p) if isinstance(p, bytes) else p[1].size for p in parts)
    end = 2 * tarfile.BLOCKSIZE  # two zero blocks end the archive; tarfile pads it to a whole record
    parts.append(bytes(end + (-(length + end)) % tarfile.RECORDSIZE))
    length += len(parts[-1])

    def body() -> Iterator[bytes]:
        for part in parts:
            if isinstance(part, bytes):
                yield part
                continue
            name, member = part
            sent = 0
            for piece in member.chunks():
                sent += len(piece)
                yield piece
            if sent != member.size:  # changed under us: end the response short rather than send a broken tar
                raise RuntimeError(f"{name}: {sent} bytes read, {member.size} expected")

    disposition = f'attachment; filename="{top}.tar"'
    headers = {"ETag": etag, "Content-Length": str(length), "Content-Disposition": disposition}
    return StreamingResponse(body(), headers=headers, media_type="application/x-tar")


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


def _padding(size: int) -> bytes:
    return bytes(-size % tarfile.BLOCKSIZE)
