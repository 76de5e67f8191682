import pytest

from pipelines.settings import SettingsError, load_settings

pytestmark = pytest.mark.unit


def test_defaults_live_under_home(tmp_path):
    s = load_settings({"CBNANO_HOME": str(tmp_path)})
    assert s.home == tmp_path
    assert s.data_dir == tmp_path / "data"
    assert s.model_store == tmp_path / "models"
    assert s.milvus_uri == str(tmp_path / "milvus.db")
    assert s.milvus_is_lite
    assert s.arxiv_delay_s == 3.0  # arXiv's terms
    assert s.arxiv_api_url == "https://export.arxiv.org/api/query"
    assert s.embedding_model == "sentence-transformers/all-MiniLM-L6-v2"
    # retraining: the scheduled default is the GPU recipe on the lab's base, never the tiny test model
    assert s.train_profile == "gpu_qlora" and s.base_model == "" and s.allow_test_models is False


def test_training_settings(tmp_path):
    s = load_settings(
        {
            "CBNANO_HOME": str(tmp_path),
            "CBNANO_BASE_MODEL": " llama-3-8b ",
            "CBNANO_TRAIN_PROFILE": "cpu_lora",
            "CBNANO_ALLOW_TEST_MODELS": "1",
        }
    )
    assert (s.base_model, s.train_profile, s.allow_test_models) == ("llama-3-8b", "cpu_lora", True)


def test_overrides_and_server_uri(tmp_path):
    s = load_settings(
        {
            "CBNANO_HOME": str(tmp_path),
            "CBNANO_MILVUS_URI": "http://ae86:19530",
            "CBNANO_MILVUS_TOKEN": "root:secret",
            "CBNANO_ARXIV_DELAY_S": "0.5",
            "CBNANO_DATA_DIR": str(tmp_path / "lake"),
        }
    )
    assert not s.milvus_is_lite
    assert s.arxiv_delay_s == 0.5
    assert s.data_dir == tmp_path / "lake"
    assert s.as_dict()["milvus_token"] == "***"


@pytest.mark.parametrize(
    "name,value",
    [
        ("CBNANO_ARXIV_DELAY_S", "soon"),
        ("CBNANO_ARXIV_DELAY_S", "-1"),
        ("CBNANO_EMBEDDING_BATCH_SIZE", "0"),
        ("CBNANO_HTTP_MAX_ATTEMPTS", "two"),
        ("CBNANO_TRAIN_PROFILE", "gpu_fp8"),
        ("CBNANO_GATEWAY_CACHE", "memcached://coordinator:11211"),
        ("CBNANO_GATEWAY_RPM", "0"),
    ],
)
def test_bad_values_are_named(name, value):
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


def test_default_training_interpreter_stays_inside_its_venv(tmp_path):
    s = load_settings({"CBNANO_HOME": str(tmp_path)})
    assert s.train_python.endswith(".venv-train/bin/python")  # not the symlink's target outside the venv


SECRET_ENV = {
    "milvus_token": ("CBNANO_MILVUS_TOKEN", "root:milvus-s3cret"),
    "search_token": ("CBNANO_SEARCH_TOKEN", "search-s3cret"),
    "system_a_token": ("CBNANO_SYSTEM_A_TOKEN", "systema-s3cret"),
    "teacher_token": ("CBNANO_TEACHER_TOKEN", "teacher-s3cret"),
    "smtp_password": ("CBNANO_SMTP_PASSWORD", "smtp-s3cret"),
    "alert_webhook_url": ("CBNANO_ALERT_WEBHOOK_URL", "https://hooks.example/services/T0/hook-s3cret"),
    "gateway_db": ("CBNANO_GATEWAY_DB", "postgresql://gw:db-s3cret@coordinator/gw-s3cret-db"),
    "gateway_cache": (
        "CBNANO_GATEWAY_CACHE",
        "redis://:redis-s3cret@coordinator:6379/1?client_name=gw-s3cret",
    ),
}


def test_every_secret_field_is_known_and_never_shown(tmp_path):
    from pipelines.settings import secret_fields

    assert set(secret_fields()) == set(SECRET_ENV)  # a new secret field gets a row above
    s = load_settings({"CBNANO_HOME": str(tmp_path), **dict(SECRET_ENV.values())})
    shown = "\n".join([repr(s), str(s), f"{s}", str(s.as_dict()), repr([s])])
    for field_name, (_, value) in SECRET_ENV.items():
        assert getattr(s, field_name) == value  # the value is there for the code that needs it
        assert value not in shown and value.split("/")[-1] not in shown, field_name
    assert "milvus_token='***'" in repr(s) and "hooks.example" in s.as_dict()["alert_webhook_url"]


def test_clients_holding_tokens_do_not_show_them(tmp_path):
    from pipelines.publishing.serving import VLLMClient
    from pipelines.vectorstore.milvus import MilvusStore

    shown = repr(VLLMClient("http://systema:8000", token="systema-s3cret")) + repr(
        MilvusStore("http://ae86:19530", "c", token="root:milvus-s3cret")
    )
    assert "s3cret" not in shown and "systema:8000" in shown and "ae86:19530" in shown


def test_cli_error_lines_and_run_summaries_carry_no_secret(tmp_path, monkeypatch, capsys):
    """A failing command prints its one error line without the token it was configured with."""
    import json

    from pipelines.cli import main
    from pipelines.settings import reset_settings_cache

    monkeypatch.setenv("CBNANO_HOME", str(tmp_path))
    for _, (name, value) in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CBNANO_MILVUS_URI", "http://127.0.0.1:9")  # nothing listens: the command fails
    monkeypatch.setenv("CBNANO_MILVUS_LOCK_WAIT_S", "0")
    reset_settings_cache()
    try:
        rc = main(["stats", "--json"])
        out, err = capsys.readouterr()
        assert rc == 1 and err.strip()
        for _, value in SECRET_ENV.values():
            assert value not in out + err and value.split("/")[-1] not in out + err
        # what a run writes as its summary: the settings as the platform prints them
        from pipelines.settings import get_settings

        dumped = json.dumps(get_settings().as_dict())
        assert not any(v.split("/")[-1] in dumped for _, v in SECRET_ENV.values())
    finally:
        reset_settings_cache()
