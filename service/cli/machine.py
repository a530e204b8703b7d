"""What the commands that work on this machine share (the method's commands, the store folder's): their errors as
one line, their progress bars, the configured store. Nothing here loads torch until a command uses it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from service.cli.common import bar_on_stderr, fail

if TYPE_CHECKING:
    from learngene.train.loop import Progress
    from templates_store import TemplateStore


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn input and store errors into one readable line and exit status 2 (no traceback)."""
    # Imported when a command runs, not with the module: both load torch, which --help never needs (start-up time).
    from learngene.errors import LearngeneError
    from templates_store import StoreError

    try:
        yield
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "input"
        raise fail(f"{field}: {first['msg']}") from None
    except (LearngeneError, StoreError, OSError) as exc:  # the user's own inputs and files; a bug keeps its traceback
        raise fail(str(exc)) from None


@contextlib.contextmanager
def progress_bar(total: int, desc: str) -> Iterator[Any]:
    with bar_on_stderr(desc, "step", total) as bar:

        def update(p: Progress) -> None:
            bar.total = p.total_steps  # known once the data is open (a run given in epochs)
            bar.update(p.step - bar.n)
            post = {"loss": f"{p.loss:.4f}", "img/s": f"{p.images_per_s:.0f}"}
            if p.accuracy is not None:
                post["acc"] = f"{p.accuracy:.3f}"
            bar.set_postfix(post)

        yield update


@lru_cache
def get_store() -> TemplateStore:
    # Imported on first use: the store loads torch, which --help and the client commands never need (start-up time).
    from jobs.settings import get_settings
    from jobs.storage import template_store

    return template_store(get_settings())
