import pytest

from pipelines.training.configs import DOMAINS, PROFILES, config_dir, config_hash, deep_merge, render_config

pytestmark = pytest.mark.unit
RUN = {
    "base_model": "/models/base/x",
    "datasets": [
        {"path": "/d/train.jsonl", "type": "chat_template", "ds_type": "json", "field_messages": "messages"}
    ],
}


def test_every_config_opens_with_its_launch_command():
    paths = list(config_dir().glob("*.yml")) + list((config_dir() / "domains").glob("*.yml"))
    assert len(paths) >= 7  # the profiles and the four domains: an empty glob would pass the loop below
    for path in paths:
        head = path.read_text().splitlines()[:4]
        assert any("cbnano retrain" in line for line in head), path


def test_render_layers_profile_domain_run():
    cfg = render_config("gpu_qlora", "thermal", {**RUN, "seed": 7})
    assert cfg["adapter"] == "qlora" and cfg["load_in_4bit"] is True and cfg["lora_r"] == 64
    assert (
        cfg["wandb_project"] == "cbnano-thermal"
        and cfg["seed"] == 7
        and cfg["base_model"] == "/models/base/x"
    )


def test_cpu_profiles_avoid_cuda_only_settings():
    for profile in ("tiny", "cpu_lora"):
        cfg = render_config(profile, "chemistry", RUN)
        assert not cfg["bf16"] and not cfg["fp16"] and not cfg["tf32"]
        assert not any(cfg[k] for k in KERNELS)
        assert cfg["sequence_len"] >= 512


KERNELS = ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel")
# attention backends that keep packed examples apart (axolotl's attn_decontaminates_packing)
PACKING_SAFE = {"sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention"}


def test_lora_kernels_are_set_explicitly_in_every_profile():
    """axolotl switches the fused LoRA kernels on by itself when the keys are left unset."""
    for profile in PROFILES:
        cfg = render_config(profile, "materials", RUN)
        assert all(isinstance(cfg.get(k), bool) for k in KERNELS), (profile, {k: cfg.get(k) for k in KERNELS})


def test_packed_profiles_use_an_attention_that_isolates_examples():
    packed = []
    for profile in PROFILES:
        cfg = render_config(profile, "chemistry", RUN)
        assert "flash_attention" not in cfg or cfg["flash_attention"] is True, profile  # no legacy off-switch
        if cfg.get("sample_packing"):
            packed.append(profile)
            assert cfg.get("attn_implementation") in PACKING_SAFE, profile
    assert "gpu_qlora" in packed  # the GPU profile packs (throughput) and must do it safely


def test_every_profile_trains_through_the_base_chat_template():
    for profile in PROFILES:
        assert render_config(profile, "thermal", RUN)["chat_template"] == "tokenizer_default", profile


def test_unknown_profile_domain_or_missing_base():
    with pytest.raises(ValueError, match="unknown profile"):
        render_config("gpu_fp8", "chemistry", RUN)
    with pytest.raises(ValueError, match="unknown domain"):
        render_config("tiny", "biology", RUN)
    with pytest.raises(ValueError, match="no base_model"):
        render_config("tiny", "chemistry", {})


def test_deep_merge_and_hash():
    assert deep_merge({"a": {"x": 1, "y": 2}, "l": [1]}, {"a": {"y": 3}, "l": [2]}) == {
        "a": {"x": 1, "y": 3},
        "l": [2],
    }
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1}) != config_hash({"a": 1, "b": 3})
    assert set(PROFILES) == {"tiny", "cpu_lora", "gpu_qlora"} and len(DOMAINS) == 4


def test_dag_form_choices_and_defaults_equal_the_pipelines_constants(monkeypatch):
    """dags/ cannot import pipelines at parse time, so cbnano_common mirrors these; they must agree."""
    import importlib

    import cbnano_common
    from pipelines.evaluation.gate import DEFAULT_MIN_GAIN
    from pipelines.settings import DEFAULT_TRAIN_PROFILE

    monkeypatch.delenv("CBNANO_TRAIN_PROFILE", raising=False)
    monkeypatch.delenv("CBNANO_BASE_MODEL", raising=False)
    common = importlib.reload(cbnano_common)
    assert list(common.TRAIN_PROFILES) == list(PROFILES) and list(common.DOMAINS) == list(DOMAINS)
    assert common.TRAIN_PROFILE == DEFAULT_TRAIN_PROFILE == "gpu_qlora"
    assert common.MIN_GAIN == DEFAULT_MIN_GAIN and common.BASE_MODEL is None


def test_every_domain_and_category_is_defined_once_and_everywhere():
    """The domain list drives the DAG form, the routing file, the axolotl overlays and the eval sets; the
    arXiv categories drive the CLI default and the DAG form: each copy must agree with the one definition."""
    import yaml

    import cbnano_common
    from pipelines.sources.arxiv import ARXIV_CATEGORIES, DEFAULT_CATEGORIES
    from pipelines.training.configs import config_dir
    from pipelines.training.datasets import domains_file

    root = config_dir().parent
    assert set(yaml.safe_load(domains_file().read_text())["domains"]) == set(DOMAINS)
    assert {p.stem for p in (root / "axolotl_configs" / "domains").glob("*.yml")} == set(DOMAINS)
    assert {p.stem for p in (root / "include" / "eval").glob("*.jsonl")} == set(DOMAINS)
    assert list(cbnano_common.DEFAULT_CATEGORIES) == list(DEFAULT_CATEGORIES)
    assert set(cbnano_common.CATEGORY_CHOICES) <= ARXIV_CATEGORIES  # the form offers real categories only
    assert set(DEFAULT_CATEGORIES) <= set(cbnano_common.CATEGORY_CHOICES)


def test_our_own_section_decides_the_version_but_never_reaches_axolotl(tmp_path):
    """``cbnano.adapter_scale`` is cbnano's step, not axolotl's: axolotl would drop the key silently (and our
    validation rejects unknown keys), so the file axolotl reads leaves the section out; the hash keeps it."""
    import yaml

    from pipelines.training.configs import adapter_scale, write_config

    plain = render_config("tiny", "catalysis", RUN)
    scaled = render_config("tiny", "catalysis", {**RUN, "cbnano": {"adapter_scale": 0.8}})
    assert adapter_scale(plain) == 1.0 and adapter_scale(scaled) == 0.8
    assert config_hash(plain) != config_hash(scaled)  # another recipe, another run folder and version
    written = yaml.safe_load(write_config(scaled, tmp_path / "c.yml").read_text())
    assert "cbnano" not in written and written["adapter"] == scaled["adapter"]


@pytest.mark.parametrize(
    "own, message",
    [
        ({"adapter_scale": 0}, "must be a number in"),
        ({"adapter_scale": 1.5}, "must be a number in"),
        ({"adapter_scale": "0.8"}, "must be a number in"),
        ({"adapter_scale": True}, "must be a number in"),
        ({"adapter_scal": 0.8}, "unknown key.*adapter_scal"),
        ("0.8", "must be a mapping"),
    ],
)
def test_a_bad_own_section_fails_when_rendered(own, message):
    with pytest.raises(ValueError, match=message):
        render_config("tiny", "catalysis", {**RUN, "cbnano": own})
