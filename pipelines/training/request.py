"""One retraining run's inputs, resolved once, at the edge.

What a person or the schedule gives — a domain, a month (or the run's data interval), a profile, a base, a
step cap, the knowledge bar — is checked and defaulted in one place, :func:`resolve_request`, by whoever
receives it: the CLI (``cbnano retrain``, ``cbnano dataset build``) and the ``domain_retraining`` DAG's
``plan`` task. The result, a :class:`RetrainRequest`, is what the stages in :mod:`pipelines.training.retrain`
take; they never re-check or re-default a value (the month is parsed, the profile defaulted from
``CBNANO_TRAIN_PROFILE`` and the base taken from ``CBNANO_BASE_MODEL`` here and nowhere else). It survives
Airflow's XCom as a plain dict (:meth:`RetrainRequest.to_dict` / :meth:`RetrainRequest.from_dict`), so a
mapped task and its retry train exactly what ``plan`` resolved.

Bad input raises :class:`RequestError` (a ValueError: the CLI exits 2, the DAG fails ``plan`` without retries);
no usable base raises :class:`~pipelines.publishing.bases.BaseModelMissing`, whose message names the setting.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

from pipelines.evaluation.gate import DEFAULT_MIN_GAIN
from pipelines.publishing.bases import locate_base
from pipelines.settings import DOMAINS, TEST_PROFILES, TRAIN_PROFILES, Settings
from pipelines.training.base_models import TINY_BASE, configured_base
from pipelines.windows import resolve_month


class RequestError(ValueError):
    """A retraining request that cannot be run as given: ``field`` (the request's name for the value) and
    ``problem`` (what is wrong with it). A caller with its own names for the values says it in those
    (:meth:`naming`), as the CLI does with its flags."""

    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(f"{field} {problem}")

    def naming(self, name: str) -> str:
        """The message with the value called ``name`` (e.g. ``--max-steps``)."""
        return f"{name} {self.problem}"


@dataclass(frozen=True)
class RetrainRequest:
    """A checked retraining run (see module docstring)."""

    domain: str
    month: str  # YYYY-MM
    profile: str  # one of settings.TRAIN_PROFILES
    # the base the run fine-tunes: a name under the store's base/ or a folder; None: the test profile's own
    # random Llama (built on first use)
    base_model: str | None
    base_name: str  # what the registry and the model card call it
    base_source: str  # where the choice came from: --base-model, CBNANO_BASE_MODEL, or the test profile
    min_gain: float = DEFAULT_MIN_GAIN
    max_steps: int | None = None
    origin: dict[str, str] = field(default_factory=dict)  # e.g. the Airflow dag and run ids
    overrides: dict[str, Any] = field(default_factory=dict)  # extra axolotl keys (part of the config hash)

    @property
    def test_profile(self) -> bool:
        return self.profile in TEST_PROFILES

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, for XCom."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetrainRequest:
        """The request :meth:`to_dict` wrote; raises RequestError for anything else."""
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) - names:
            raise RequestError("request", f"is not a retraining request: {data!r}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise RequestError("request", f"is not a retraining request: {exc}") from None


def resolve_request(
    settings: Settings,
    domain: str,
    *,
    month: str | None = None,
    interval_start: datetime | None = None,
    now: datetime | None = None,
    profile: str | None = None,
    base_model: str | None = None,
    min_gain: float = DEFAULT_MIN_GAIN,
    max_steps: int | None = None,
    origin: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> RetrainRequest:
    """Check every value and apply every default once; returns the request.

    ``month`` wins; else the month ``interval_start`` (the run's data interval) falls in; else the last
    complete month before ``now``. ``profile`` defaults to ``CBNANO_TRAIN_PROFILE``. The base is
    ``base_model``, else ``CBNANO_BASE_MODEL``; the ``tiny`` profile without one builds its own test model.
    A negative ``min_gain`` (a candidate worse than production could publish) needs
    ``CBNANO_ALLOW_TEST_MODELS=1``.
    """
    if domain not in DOMAINS:
        raise RequestError("domain", f"{domain!r} is unknown; known: {', '.join(DOMAINS)}")
    try:
        resolved_month = resolve_month(interval_start, month, now)
    except ValueError:
        raise RequestError("month", f"must be YYYY-MM, got {month!r}") from None
    profile = profile or settings.train_profile
    if profile not in TRAIN_PROFILES:
        raise RequestError("profile", f"{profile!r} is unknown; known: {', '.join(TRAIN_PROFILES)}")
    if max_steps is not None:
        if isinstance(max_steps, bool) or not isinstance(max_steps, int):
            raise RequestError("max_steps", f"must be a whole number, not {max_steps!r}")
        if max_steps < 1:
            raise RequestError("max_steps", f"must be at least 1, not {max_steps}")
    if isinstance(min_gain, bool) or not isinstance(min_gain, int | float) or not math.isfinite(min_gain):
        raise RequestError("min_gain", f"must be a number, not {min_gain!r}")
    if min_gain < 0 and not settings.allow_test_models:
        raise RequestError(
            "min_gain",
            f"{min_gain} would let a candidate worse than production publish; a negative bar is for test "
            "runs only (CBNANO_ALLOW_TEST_MODELS=1)",
        )
    configured = configured_base(settings, profile, base_model)  # BaseModelMissing for a real profile
    if configured:
        value, source = configured
        name = locate_base(settings, value, source).name  # a missing or unusable folder fails here
    else:
        value, source, name = None, f"profile {profile}", TINY_BASE
    return RetrainRequest(
        domain=domain,
        month=resolved_month,
        profile=profile,
        base_model=value,
        base_name=name,
        base_source=source,
        min_gain=float(min_gain),
        max_steps=max_steps,
        origin=dict(origin or {}),
        overrides=dict(overrides or {}),
    )
