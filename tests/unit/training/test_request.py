"""A retraining request is resolved once, at the edge: every value checked and every default applied there, and
the stages take what it says (no re-defaulting from the settings later)."""

import dataclasses
import json
from datetime import UTC, datetime

import pytest

from pipelines.publishing.bases import BaseModelMissing
from pipelines.training.request import RequestError, RetrainRequest, resolve_request

pytestmark = pytest.mark.unit


def _base(settings, name="smollm2"):
    """A folder that passes as a usable base (config and tokenizer present)."""
    folder = settings.model_store / "base" / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "tokenizer.json").write_text("{}")
    return folder


def test_defaults_come_from_the_settings_and_the_run_once(cbnano_env):
    _base(cbnano_env)
    settings = dataclasses.replace(cbnano_env, base_model="smollm2", train_profile="cpu_lora")
    req = resolve_request(settings, "catalysis", interval_start=datetime(2026, 11, 1, tzinfo=UTC))
    assert (req.domain, req.month, req.profile) == ("catalysis", "2026-11", "cpu_lora")
    assert (req.base_model, req.base_name, req.base_source) == ("smollm2", "smollm2", "CBNANO_BASE_MODEL")
    assert (req.min_gain, req.max_steps, req.origin, req.overrides) == (0.02, None, {}, {})
    # a manual run without an interval: the month before the run's own day, never the wall clock's
    assert resolve_request(settings, "catalysis", now=datetime(2027, 3, 9, tzinfo=UTC)).month == "2027-02"
    # the explicit month wins over the interval; an explicit base over the setting
    _base(cbnano_env, "other")
    req = resolve_request(
        settings,
        "thermal",
        month="2026-07",
        interval_start=datetime(2026, 11, 1, tzinfo=UTC),
        base_model="other",
        profile="gpu_qlora",
        max_steps=5,
    )
    assert (req.month, req.profile, req.base_name, req.base_source, req.max_steps) == (
        "2026-07",
        "gpu_qlora",
        "other",
        "--base-model",
        5,
    )


def test_the_test_profile_without_a_base_uses_its_own_model_and_builds_nothing(cbnano_env):
    req = resolve_request(cbnano_env, "catalysis", profile="tiny", month="2026-11")
    assert req.base_model is None and req.base_name == "tiny-llama" and req.test_profile
    assert not cbnano_env.model_store.exists()  # resolving reads; the tiny base is built by the run


@pytest.mark.parametrize(
    ("values", "field", "problem"),
    [
        ({"domain": "geology"}, "domain", "'geology' is unknown"),
        ({"month": "2026-13"}, "month", "must be YYYY-MM, got '2026-13'"),
        ({"month": "last month"}, "month", "must be YYYY-MM"),
        ({"profile": "a100"}, "profile", "'a100' is unknown; known: tiny, cpu_lora, gpu_qlora"),
        ({"max_steps": 0}, "max_steps", "must be at least 1, not 0"),
        ({"max_steps": 2.5}, "max_steps", "must be a whole number, not 2.5"),
        ({"max_steps": True}, "max_steps", "must be a whole number, not True"),
        ({"min_gain": float("nan")}, "min_gain", "must be a number, not nan"),
        ({"min_gain": "0.1"}, "min_gain", "must be a number"),
    ],
)
def test_bad_values_are_refused_naming_the_value(cbnano_env, values, field, problem):
    values = {"domain": "catalysis", "profile": "tiny", **values}
    with pytest.raises(RequestError) as caught:
        resolve_request(cbnano_env, values.pop("domain"), **values)
    assert caught.value.field == field and problem in caught.value.problem
    assert caught.value.naming("--x").startswith("--x ")


def test_a_negative_bar_needs_test_models_allowed(cbnano_env):
    assert resolve_request(cbnano_env, "catalysis", profile="tiny", min_gain=-1.0).min_gain == -1.0
    strict = dataclasses.replace(cbnano_env, allow_test_models=False)
    with pytest.raises(RequestError, match="CBNANO_ALLOW_TEST_MODELS=1"):
        resolve_request(strict, "catalysis", profile="tiny", min_gain=-1.0)


def test_no_usable_base_names_the_setting_before_anything_is_written(cbnano_env):
    with pytest.raises(BaseModelMissing, match="set CBNANO_BASE_MODEL"):
        resolve_request(cbnano_env, "catalysis", profile="cpu_lora")
    with pytest.raises(BaseModelMissing, match="--base-model='nope' is not a usable base model"):
        resolve_request(cbnano_env, "catalysis", profile="cpu_lora", base_model="nope")
    assert not (cbnano_env.data_dir / "datasets").exists()


def test_a_request_survives_xcom_as_json_and_nothing_else_passes_for_one(cbnano_env):
    req = resolve_request(
        cbnano_env,
        "catalysis",
        profile="tiny",
        month="2026-11",
        origin={"dag_id": "domain_retraining", "run_id": "r1"},
        overrides={"learning_rate": 0.001},
    )
    assert RetrainRequest.from_dict(json.loads(json.dumps(req.to_dict()))) == req
    with pytest.raises(RequestError, match="not a retraining request"):
        RetrainRequest.from_dict({**req.to_dict(), "gpu": 1})
    with pytest.raises(RequestError, match="not a retraining request"):
        RetrainRequest.from_dict({"domain": "catalysis"})


def test_the_stages_take_the_request_and_do_not_read_the_defaults_again(cbnano_env, monkeypatch):
    """Once resolved, changing the settings' defaults changes nothing the run does: the profile and base the
    dataset step uses are the request's."""
    from pipelines.training import retrain as chain

    seen = {}

    def base(settings, base_model, where="--base-model"):
        seen["base"] = (base_model, where)
        raise RuntimeError("stop")

    monkeypatch.setattr(chain, "resolve_base", base)
    req = resolve_request(cbnano_env, "catalysis", profile="tiny", month="2026-11")
    changed = dataclasses.replace(cbnano_env, base_model="elsewhere", train_profile="gpu_qlora")
    with pytest.raises(RuntimeError, match="stop"):
        chain.retrain(changed, req)
    assert seen["base"] == (None, "profile tiny")
