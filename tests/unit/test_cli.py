"""Bad input gets one line on stderr and exit code 2, before any network or model work."""

import pytest

from pipelines.cli import main

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "argv,message",
    [
        (["ingest", "arxiv", "--start", "2026-13-01", "--end", "2026-12-02"], "not a date"),
        (["ingest", "arxiv", "--start", "yesterday", "--end", "2026-12-02"], "not a date"),
        (["ingest", "arxiv", "--start", "2026-11-27", "--end", "2026-11-27"], "must be before"),
        (["ingest", "arxiv", "--start", "2026-11-28", "--end", "2026-11-27"], "must be before"),
        (["ingest", "arxiv", "--start", "2026-11-26"], "--start and --end are required"),
        (
            ["ingest", "arxiv", "--start", "2026-11-26", "--end", "2026-11-27", "--max-results", "0"],
            "positive",
        ),
        (["search", "   "], "query is empty"),
        (["ingest", "arxiv", "--start", "0999-01-01", "--end", "0999-01-02"], "before arXiv began"),
        (
            [
                "ingest",
                "arxiv",
                "--start",
                "2026-11-26",
                "--end",
                "2026-11-27",
                "--category",
                "cond-mat.mtrl-sc",
            ],
            "did you mean cond-mat.mtrl-sci",
        ),
        (["search", "x", "--category", "cond-mat.mtrl-sci\n"], "category must look like"),
        (["dataset", "build", "--domain", "../../etc", "--profile", "tiny"], "unknown domain '../../etc'"),
        (["models", "promote", "--domain", "catalysis\n", "--version", "v1"], "invalid domain name"),
        (["ask", "q", "--top-k", "0"], "--top-k must be between 1 and 20"),
        (["retrain", "--domain", "catalysis", "--max-steps", "-3"], "--max-steps must be at least 1"),
        (["retrain", "--domain", "catalysis", "--min-gain", "nan"], "--min-gain must be a number"),
        (["retrain", "--domain", "catalysis", "--min-gain", "inf"], "--min-gain must be a number"),
    ],
)
def test_bad_input(cbnano_env, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (cbnano_env.home / "data" / "datasets").exists()  # refused before any work


def test_bad_category_is_a_one_line_error(cbnano_env, capsys):
    rc = main(["ingest", "arxiv", "--start", "2026-11-26", "--end", "2026-11-27", "--category", "no such!"])
    err = capsys.readouterr().err
    assert rc == 2 and "not an arXiv category" in err


def test_search_before_any_ingest(cbnano_env, capsys):
    assert main(["search", "garnet"]) == 2
    assert "nothing ingested yet" in capsys.readouterr().err


def test_unreachable_endpoint(cbnano_env, capsys, monkeypatch):
    from pipelines.settings import reset_settings_cache

    monkeypatch.setenv("CBNANO_ARXIV_API_URL", "http://127.0.0.1:1/api/query")
    reset_settings_cache()
    assert main(["ingest", "arxiv", "--start", "2026-11-26", "--end", "2026-11-27"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("cbnano: error: giving up") and "attempts=3" in err


def test_models_list_promote_rollback(cbnano_env, capsys, tmp_path):
    import json

    from pipelines.publishing.model_store import ModelStore

    store = ModelStore(cbnano_env.model_store)
    for v in ("v1", "v2"):
        d = tmp_path / v
        d.mkdir()
        (d / "adapter.bin").write_text(v)
        store.publish("thermal", v, d, {"metrics": {"mc_accuracy": 0.5}})
    assert main(["models", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(m["version"], m["production"]) for m in listed] == [("v1", False), ("v2", True)]
    assert main(["models", "rollback", "--domain", "thermal"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {
        "domain": "thermal",
        "action": "rollback",
        "production": "v1",
        "system_a": "not_configured",
    }
    assert main(["models", "promote", "--domain", "thermal", "--version", "v2"]) == 0
    assert store.production("thermal") == "v2"
    capsys.readouterr()
    assert main(["models", "promote", "--domain", "thermal", "--version", "v9"]) == 2
    assert "thermal/v9 is not published" in capsys.readouterr().err
    assert main(["models", "promote", "--domain", "thermal"]) == 2


def test_a_negative_min_gain_is_for_test_runs_only(cbnano_env, capsys, monkeypatch):
    from pipelines.settings import reset_settings_cache

    monkeypatch.setenv("CBNANO_ALLOW_TEST_MODELS", "0")
    reset_settings_cache()
    assert main(["retrain", "--domain", "catalysis", "--min-gain", "-1"]) == 2
    assert "negative bar is for test runs only" in capsys.readouterr().err


def test_a_broken_training_environment_is_one_line(cbnano_env, capsys, monkeypatch, tmp_path):
    from pipelines.settings import reset_settings_cache

    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'No module named axolotl' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CBNANO_TRAIN_PYTHON", str(broken))
    reset_settings_cache()
    assert main(["dataset", "build", "--domain", "catalysis", "--profile", "tiny"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("cbnano: error: training-environment step build_base failed") and err.count("\n") == 1
    )
    assert "No module named axolotl" in err and "Traceback" not in err


def test_a_value_error_from_deep_in_the_retrain_chain_is_a_failure_not_bad_input(
    cbnano_env, monkeypatch, capsys
):
    def broken(*a, **k):
        raise ValueError("a lake record without its title")

    monkeypatch.setattr("pipelines.training.base_models.check_base", lambda *a, **k: None)
    monkeypatch.setattr("pipelines.training.retrain.retrain", broken)
    assert main(["retrain", "--domain", "catalysis"]) == 1
    assert capsys.readouterr().err.strip() == "cbnano: error: a lake record without its title"
