"""What can be used: the stored template sets, with manifest, lineage, metrics and quality card."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from jobs.card_views import card_png, card_readme
from learngene.quality.card import QualityCard
from service.api.deps import StoreDep, current_client
from service.api.downloads import etag_matches, local_members, tar_response
from service.api.pages import Cursor, Limit, decode_cursor, encode_cursor, invalid, next_link
from service.api.schemas import TemplateSetList, TemplateSetQuery, TemplateSetView
from templates_store import NotFoundError, ResolvedRef, TemplateStore
from templates_store.choice import Wanted, choose, rank

router = APIRouter(prefix="/v1/template-sets", tags=["template sets"], dependencies=[Depends(current_client)])


@router.get("", response_model=TemplateSetList)
def list_template_sets(
    request: Request,
    store: StoreDep,
    query: Annotated[TemplateSetQuery, Query()],
    limit: Limit = 50,
    cursor: Cursor = None,
) -> TemplateSetList:
    """Every version with its input domain and, when it has a quality card, its best and worst card accuracy; by
    name, then version, a page at a time: follow `next` (null on the last page). `img_size`, `in_chans`,
    `num_classes` keep the sets condensed for that domain; `depth` and `embed_dim` together rank them by what their
    card predicts at that size (`prediction`: the row used), the best first, sets without a card last."""
    name, depth, embed_dim = query.name, query.depth, query.embed_dim
    if (depth is None) != (embed_dim is None):
        raise invalid(
            "depth" if depth is None else "embed_dim", "give depth and embed_dim together (the size to rank for)"
        )
    wanted = Wanted(query.img_size, query.in_chans, query.num_classes, depth, embed_dim)
    params = {"name": name, **dataclasses.asdict(wanted), "limit": limit}
    if wanted == Wanted():  # the whole store: pages read only their own manifests
        after = None
        if cursor is not None:
            after = tuple(decode_cursor(cursor, (str, int)))
            if after[1] < 1:
                raise invalid("cursor", "not a cursor of this list: pass the `next` link's cursor unchanged")
        found = store.list(name, after=after, limit=limit + 1)
        shown = found[:limit]
        more = encode_cursor(shown[-1].name, shown[-1].version) if len(found) > limit else None
        return TemplateSetList(items=shown, next=next_link(request, "list_template_sets", params, more))
    chosen = choose(store, wanted, name)
    if cursor is not None:  # past the last one shown, in the ranking's own order: a set published meanwhile
        last = tuple(decode_cursor(cursor, (int, float, str, int)))  # neither repeats nor hides one
        chosen = [v for v in chosen if rank(v) > last]
    shown = chosen[:limit]
    more = encode_cursor(*rank(shown[-1])) if len(chosen) > limit else None
    return TemplateSetList(items=shown, next=next_link(request, "list_template_sets", params, more))


@router.get("/{ref}", response_model=TemplateSetView)
def get_template_set(ref: str, store: StoreDep) -> TemplateSetView:
    """`ref` is `name`, `name@N` or `name@alias`."""
    resolved = store.resolve(ref)
    return TemplateSetView(
        ref=str(resolved),
        digest=resolved.digest,
        aliases={alias: record.version for alias, record in store.aliases(resolved.name).items()},
        manifest=store.manifest(resolved).model_dump(mode="json"),
    )


@router.get(
    "/{ref}/files.tar",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-tar": {}}}, 304: {}},
)
def download_template_set(ref: str, store: StoreDep, if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """The version as one uncompressed tar, `<name>-<version>/`: `manifest.json`, the files it names and
    `model.sig`, the service's signature over them (`learngene verify DIR`). The ETag is the manifest's sha256."""
    resolved = store.resolve(ref)
    etag = f'"{resolved.digest}"'
    if if_none_match is not None and etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    version = store.files(resolved)  # every file re-hashed against the manifest before the first byte
    mtime = 0  # a manifest placed by hand may carry any text as its date
    with contextlib.suppress(ValueError, OverflowError):
        mtime = max(int(dt.datetime.fromisoformat(version.manifest.created).timestamp()), 0)
    members = local_members(version.paths, version.blobs)
    return tar_response(members, top=f"{resolved.name}-{resolved.version}", mtime=mtime, etag=etag)


def card_or_404(store: TemplateStore, ref: str) -> tuple[ResolvedRef, QualityCard]:
    resolved = store.resolve(ref)
    card = store.card(resolved)
    if card is None:
        raise NotFoundError(
            f"template set {resolved} has no quality card yet; an admin measures it with "
            f"POST /v1/admin/template-sets/{resolved}/card (or `learngene templates card {resolved} --refresh`)"
        )
    return resolved, card


@router.get("/{ref}/card", response_model=QualityCard)
def get_card(ref: str, store: StoreDep) -> QualityCard:
    """The version's quality card: its input domain, and per size (depth, width, heads, parameters) the held-out
    accuracy of WAVE descendants and of timm's initialization trained with the same budget."""
    return card_or_404(store, ref)[1]


@functools.lru_cache(maxsize=64)
def card_plot(card_json: str) -> bytes:
    """A card's plot, drawn once per card (by its JSON): drawing takes a tenth of a second of the API's CPU."""
    return card_png(QualityCard.model_validate_json(card_json))


@router.get("/{ref}/card.png", response_class=Response, responses={200: {"content": {"image/png": {}}}, 304: {}})
def get_card_png(ref: str, store: StoreDep, if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """The quality card as a plot: held-out accuracy against parameters per width, WAVE vs timm's init. Its ETag
    is the card's digest: `If-None-Match` answers 304 without drawing anything."""
    card_json = card_or_404(store, ref)[1].model_dump_json()
    etag = f'"{hashlib.sha256(card_json.encode()).hexdigest()}"'
    if if_none_match is not None and etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return Response(card_plot(card_json), media_type="image/png", headers={"ETag": etag})


@router.get("/{ref}/README.md", response_class=Response, responses={200: {"content": {"text/markdown": {}}}})
def get_model_card(ref: str, store: StoreDep) -> Response:
    """A Hugging Face-style model card for the version: YAML metadata and the quality card as markdown."""
    resolved, card = card_or_404(store, ref)
    return Response(card_readme(card, store.manifest(resolved)), media_type="text/markdown; charset=utf-8")
