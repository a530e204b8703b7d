"""What can be used: the stored template sets, with manifest, lineage and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.api.deps import StoreDep, current_client
from service.api.schemas import TemplateSetList, TemplateSetView

router = APIRouter(prefix="/v1/template-sets", tags=["template sets"], dependencies=[Depends(current_client)])


@router.get("", response_model=TemplateSetList)
def list_template_sets(store: StoreDep, name: str | None = None) -> TemplateSetList:
    return TemplateSetList(items=store.list(name))


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
