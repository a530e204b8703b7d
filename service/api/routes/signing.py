"""The public half of the key the service signs its artifacts with (storage.signing): what `learngene verify` and any
OpenSSF model-signing verifier check the `model.sig` of a checkpoint folder or a template-set version against."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from service.api.deps import SettingsDep, current_client
from storage.signing import public_key_pem

router = APIRouter(tags=["operations"], dependencies=[Depends(current_client)])  # a /v1/ route like the others
PEM_MEDIA_TYPE = "application/x-pem-file"


@router.get("/v1/signing-key", response_class=Response, responses={200: {"content": {PEM_MEDIA_TYPE: {}}}})
def get_signing_key(settings: SettingsDep) -> Response:
    """The service's public signing key (PEM, EC P-256): every checkpoint folder it publishes carries `model.sig`,
    signed with the private half (`learngene verify DIR`, or OpenSSF's `model_signing verify key --signature
    DIR/model.sig --public_key key.pem --ignore-paths DIR/model.sig DIR`)."""
    return Response(public_key_pem(settings.signing_key), media_type=PEM_MEDIA_TYPE)
