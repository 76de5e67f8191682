"""Bad input gets one line on stderr and exit code 2, before any network or model work."""

from pathlib import Path

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
        (
            ["dataset", "build", "--domain", "../../etc", "--profile", "tiny"],
            "--domain '../../etc' is unknown",
        ),
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


def test_an_empty_name_or_a_bad_setting_is_bad_input(cbnano_env, capsys, monkeypatch):
    """Exit 2 for what the user typed or set, before any work; exit 1 is kept for failures of the work."""
    from pipelines.settings import reset_settings_cache

    assert main(["ingest", "pubchem", "--name", " "]) == 2
    assert "--name needs a compound name" in capsys.readouterr().err
    monkeypatch.setenv("CBNANO_ARXIV_API_URL", "not a url")
    reset_settings_cache()
    assert main(["ingest", "arxiv", "--start", "2026-11-26", "--end", "2026-11-27"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CBNANO_ARXIV_API_URL" in err[0]


def test_stats_on_an_empty_home_creates_nothing(cbnano_env, capsys):
    home = cbnano_env.home
    before = sorted(p.name for p in home.rglob("*")) if home.exists() else []
    assert main(["stats", "--json"]) == 0
    assert '"sources": {}' in capsys.readouterr().out
    assert not Path(cbnano_env.milvus_uri).exists()
    assert (sorted(p.name for p in home.rglob("*")) if home.exists() else []) == before


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
        gate = {"publish": v == "v2"}
        store.publish(
            "thermal", v, d, {"metrics": {"mc_prob": 0.5, "knowledge_closed_doc": 0.4}, "gate": gate}
        )
    assert main(["models", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(m["version"], m["production"], m["decision"]) for m in listed] == [
        ("v1", False, "refused"),
        ("v2", True, "passed"),
    ]
    assert main(["models", "list"]) == 0  # a table: a header, one row per version, production marked
    head, first, second, foot = capsys.readouterr().out.splitlines()
    assert head.split() == ["domain", "version", "made", "knowledge", "mc", "p", "gate", "production"]
    assert first.split()[:2] == ["thermal", "v1"] and first.split()[-3:] == ["0.400", "0.500", "refused"]
    assert second.split()[-2:] == ["passed", "PRODUCTION"] and foot.startswith("knowledge:")
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

    monkeypatch.setattr("pipelines.training.retrain.retrain", broken)
    assert main(["retrain", "--domain", "catalysis", "--profile", "tiny"]) == 1
    assert capsys.readouterr().err.strip() == "cbnano: error: a lake record without its title"


def test_every_command_names_its_arguments_and_settings_in_help():
    """A newcomer reads --help: every positional argument says what it is, every command names
    CBNANO_HOME and the settings it reads."""
    import argparse

    from pipelines.cli import COMMAND_SETTINGS, _subparsers, build_parser

    root = build_parser()
    assert "CBNANO_HOME" in root.format_help()
    commands = [root, *_subparsers(root)]
    assert len(commands) > 15
    for parser in commands[1:]:
        text = parser.format_help()
        assert "CBNANO_HOME" in text, parser.prog
        for action in parser._actions:
            if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"{parser.prog}: {action.dest} has no help"
    for name, needed in COMMAND_SETTINGS.items():
        for var in needed.split():
            if var.startswith("CBNANO_"):
                assert var in " ".join(
                    next(p for p in commands if p.prog == f"cbnano {name}").format_help().split()
                )


def test_grpc_core_lines_are_kept_out_of_the_terminal_unless_asked_for(monkeypatch):
    import os

    from pipelines.cli import quiet_grpc

    monkeypatch.delenv("GRPC_VERBOSITY", raising=False)
    quiet_grpc()
    assert os.environ["GRPC_VERBOSITY"] == "NONE"
    monkeypatch.setenv("GRPC_VERBOSITY", "DEBUG")  # the user's choice wins
    quiet_grpc()
    assert os.environ["GRPC_VERBOSITY"] == "DEBUG"


def test_milvus_client_tracebacks_go_to_a_log_file_not_the_terminal(tmp_path, capsys):
    import logging

    import pymilvus  # noqa: F401 - its import installs the terminal handler that must go

    from pipelines.cli import LIBRARY_LOGGERS, route_library_logs

    saved = {
        n: (logging.getLogger(n).propagate, list(logging.getLogger(n).handlers)) for n in LIBRARY_LOGGERS
    }
    try:
        path = route_library_logs(tmp_path / "home", verbose=False)
        assert not path.exists()  # nothing logged yet: no file, no folder
        try:
            raise ConnectionError("the Milvus Lite server went away")
        except ConnectionError:
            logging.getLogger("pymilvus.decorators").error("RPC error: [query]", exc_info=True)
        assert not any(type(h) is logging.StreamHandler for h in logging.getLogger("pymilvus").handlers)
        for h in logging.getLogger("pymilvus").handlers:
            h.flush()
        assert capsys.readouterr().err == ""
        text = path.read_text()
        assert "RPC error: [query]" in text and "Traceback" in text and "went away" in text
    finally:
        for n, (propagate, handlers) in saved.items():
            logging.getLogger(n).propagate = propagate
            logging.getLogger(n).handlers = handlers
