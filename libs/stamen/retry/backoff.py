"""Capped exponential backoff with optional full jitter.

Full jitter (delay drawn uniformly from [0, ceiling]) spreads retries from many jobs that
failed together - e.g. a burst of S3 SlowDown errors - instead of having them retry in
lockstep and trip the same limit again.
"""

from __future__ import annotations

import math
import random
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

JitterMode = Literal["full", "none"]


class BackoffPolicy(BaseModel):
    """``ceiling_for(n) = min(cap_seconds, initial_seconds * factor ** (n - 1))`` for attempt n >= 1."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    initial_seconds: float = Field(default=1.0, gt=0, description="ceiling for the first retry")
    factor: float = Field(default=2.0, ge=1, description="growth of the ceiling per attempt")
    cap_seconds: float = Field(default=300.0, gt=0, description="upper bound of any delay")
    jitter: JitterMode = "full"

    @model_validator(mode="after")
    def _cap_not_below_initial(self) -> Self:
        if self.cap_seconds < self.initial_seconds:
            raise ValueError(
                f"cap_seconds ({self.cap_seconds:g}) must be >= initial_seconds ({self.initial_seconds:g})"
            )
        return self

    def ceiling_for(self, attempt: int) -> float:
        """The largest delay allowed before retry ``attempt`` (1 = first retry)."""
        _check_attempt(attempt)
        if self.factor == 1.0:
            return self.initial_seconds
        # Compare in log space so huge attempt numbers cannot overflow factor ** n.
        if (attempt - 1) * math.log(self.factor) >= math.log(self.cap_seconds / self.initial_seconds):
            return self.cap_seconds
        return min(self.cap_seconds, self.initial_seconds * self.factor ** (attempt - 1))

    def delay_for(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry ``attempt``; pass ``rng`` for reproducible jitter."""
        ceiling = self.ceiling_for(attempt)
        if self.jitter == "none":
            return ceiling
        return (rng if rng is not None else random).uniform(0.0, ceiling)


def _check_attempt(attempt: int) -> None:
    if isinstance(attempt, bool) or not isinstance(attempt, int):
        raise TypeError(f"attempt must be an int, got {type(attempt).__name__}")
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1 (1 is the first retry), got {attempt}")
