"""Signed artifacts: every checkpoint folder a worker publishes and every template-set version the store publishes
carries `model.sig`, an OpenSSF model-signing signature (a DSSE envelope over the sha256 of each file of the folder)
made with the service's key.

Key-based, since there is no Sigstore service here: an elliptic-curve key (P-256, PEM) at `Settings.signing_key`,
generated on first use when absent (mode 0600; several processes starting at once agree on one key: the first to
link its file wins). Every host that signs (the workers) or serves the public half (`GET /v1/signing-key`, the API)
reads the same key: in a deployment of several hosts it is a secret mounted on each. Verification needs only the
public key (`learngene verify DIR`, `Client.verify`). Imports neither torch nor the server: a client verifies too.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from model_signing import hashing, signing, verifying

SIGNATURE = "model.sig"


class SignatureInvalid(ValueError):
    """A folder whose files are not exactly the ones its signature names, or a signature not made by the key."""


def _hashing() -> hashing.Config:
    # The signature lies inside the folder it signs; `ignore_git_paths=False`: every other file is signed.
    return hashing.Config().set_ignored_paths(paths=[SIGNATURE], ignore_git_paths=False)


def ensure_key(path: Path) -> Path:
    """The private key at `path`, created now if there is none."""
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".signing-key.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another process made one first: theirs is the key
            os.link(tmp, path)
    finally:
        os.unlink(tmp)
    return path


def public_key_pem(private_key: Path) -> bytes:
    """The public half of the key at `private_key` (created if absent), as PEM."""
    key = serialization.load_pem_private_key(ensure_key(private_key).read_bytes(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def sign_folder(folder: Path, private_key: Path) -> Path:
    """Write `folder/model.sig` over every other file of `folder`; its path."""
    signature = folder / SIGNATURE
    config = signing.Config().use_elliptic_key_signer(private_key=ensure_key(private_key))
    config.set_hashing_config(_hashing()).sign(folder, signature)
    return signature


def verify_folder(folder: Path, public_key: bytes) -> None:
    """Raise `SignatureInvalid` unless `folder/model.sig` is the key's signature of exactly the folder's files."""
    signature = folder / SIGNATURE
    if not signature.is_file():
        raise SignatureInvalid(f"{folder.name}/ has no {SIGNATURE}: it is not a signed folder")
    with tempfile.TemporaryDirectory() as scratch:
        key = Path(scratch) / "public.pem"
        key.write_bytes(public_key)
        verifier = verifying.Config().use_elliptic_key_verifier(public_key=key).set_hashing_config(_hashing())
        try:
            verifier.verify(folder, signature)
        except Exception as exc:  # model_signing raises ValueError for a mismatch, others for a foreign key
            raise SignatureInvalid(f"{folder.name}/ does not match its signature: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text.split(": Expected", 1)[0][:300]  # "... Hash mismatch for 'a.txt'", not the digests' bytes
