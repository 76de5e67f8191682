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
    ],
)
def test_bad_values_are_named(name, value):
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


def test_default_training_interpreter_stays_inside_its_venv(tmp_path):
    s = load_settings({"CBNANO_HOME": str(tmp_path)})
    assert s.train_python.endswith(".venv-train/bin/python")  # not the symlink's target outside the venv
