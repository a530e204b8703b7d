"""What a caller chooses for the scaler fitting: the calibration data and the fitting settings.

Plain pydantic models without torch, so that the command line takes its option defaults from them without loading
torch at start-up.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SEED_MAX = 2**32 - 1  # seeds are combined with step counters and must stay in torch's generator range


class Calibration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    uri: str = Field(description="data reference: idx://, imagefolder://, bundle:// or a path")
    max_samples: int | None = Field(default=2048, ge=1, description="seeded subset size; null for all")
    eval_uri: str | None = Field(
        default=None,
        description="held-out labelled data (same reference forms): the fitted descendant's accuracy "
        "on it is reported as heldout_accuracy; at most max_samples images are used",
    )


class FitSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    steps: int = Field(
        default=200,
        ge=0,
        description="scaler-fitting steps; 0 is pure inheritance. In a request without calibration "
        "data the default is 0, and asking for steps is an error",
    )
    lr: float = Field(default=2e-3, gt=0)
    batch_size: int = Field(default=64, ge=1)
    seed: int = Field(default=0, ge=0, le=SEED_MAX)
    noise: float = Field(default=1e-6, ge=0, description="eps of the N(0, 1) noise added to inherited scalers")
