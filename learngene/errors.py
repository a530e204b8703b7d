"""One error taxonomy for the method core (huggingface_hub's `errors.py` is the model).

    LearngeneError            everything the core raises on purpose
    ├── UserError             the request or its inputs are wrong: the message is for whoever sent them (it names
    │   │                     the field or the reference as they wrote it, never a server path); no traceback
    │   ├── SpecError         an architecture that cannot be built (`field` names the input)
    │   ├── DataRefError      a data reference that cannot be used (`reason`: 'invalid' or 'unavailable')
    │   ├── CheckpointError   a checkpoint that is not safetensors, or does not fit the architecture it names
    │   └── NonFiniteWeights  weights about to be written hold NaN or Inf (nothing is written)
    └── IntegrityError        stored bytes are missing, truncated or not what their manifest records: the store's
                              or the machine's fault, not the request's

Anything else (a ValueError from deep inside torch, a KeyError, an OSError) is a bug or the infrastructure: the
application logs it with its traceback and request id and answers 500, or fails the job and lets it be retried.
`UserError` is also a `ValueError`, so pydantic validators that raise one report a field error.
"""

from __future__ import annotations


class LearngeneError(Exception):
    """The base of every error the method core raises on purpose."""


class UserError(LearngeneError, ValueError):
    """The request or its inputs are wrong; the message says what to change."""


class SpecError(UserError):
    """A request for an architecture that cannot be built; `field` names the offending input."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class DataRefError(UserError):
    """A data reference that cannot be used. `reason` is 'invalid' or 'unavailable' (missing, or outside the roots:
    the two are told apart by nobody, so a client cannot probe the server's files). Messages name the reference as
    the client wrote it, never a resolved server path."""

    def __init__(self, uri: str, message: str, reason: str = "invalid"):
        super().__init__(f"data reference {uri!r}: {message}")
        self.uri = uri
        self.reason = reason


class CheckpointError(UserError):
    """A checkpoint that cannot be used: not a readable safetensors file, or not the architecture it is meant to be."""


class NonFiniteWeights(UserError):
    """Weights about to be written hold NaN or Inf: nothing is written, the job fails with this."""


class IntegrityError(LearngeneError):
    """A stored file is missing, truncated or does not match its recorded checksum."""
