"""What each problem `type` means: the documents that the relative type URIs of problem details name."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from service.api.problems import KINDS, TYPE_PREFIX, ProblemType

router = APIRouter(tags=["operations"])


@router.get(TYPE_PREFIX + "{kind}", response_model=ProblemType, name="problems.get")
def get_problem_type(kind: str) -> ProblemType:
    """The kind of problem that `type: /problems/<kind>` names: its status, title and what it means."""
    found = KINDS.get(kind)
    if found is None:  # the kind is not echoed back: it may be anything
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no such problem type; the types are {', '.join(KINDS)}")
    return ProblemType(type=found.type, title=found.title, status=found.status, description=found.description)
