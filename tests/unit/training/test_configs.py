import pytest

from pipelines.training.configs import CONFIG_DIR, DOMAINS, PROFILES, config_hash, deep_merge, render_config

pytestmark = pytest.mark.unit
RUN = {"base_model": "/models/base/x", "datasets": [{"path": "/d/train.jsonl", "type": "alpaca", "ds_type": "json"}]}


def test_every_config_opens_with_its_launch_command():
    for path in list(CONFIG_DIR.glob("*.yml")) + list((CONFIG_DIR / "domains").glob("*.yml")):
        head = path.read_text().splitlines()[:4]
        assert any("cbnano retrain" in line for line in head), path


def test_render_layers_profile_domain_run():
    cfg = render_config("gpu_qlora", "thermal", {**RUN, "seed": 7})
    assert cfg["adapter"] == "qlora" and cfg["load_in_4bit"] is True and cfg["lora_r"] == 64
    assert cfg["wandb_project"] == "cbnano-thermal" and cfg["seed"] == 7 and cfg["base_model"] == "/models/base/x"


def test_cpu_profiles_avoid_cuda_only_settings():
    for profile in ("tiny", "cpu_lora"):
        cfg = render_config(profile, "chemistry", RUN)
        assert not cfg["bf16"] and not cfg["fp16"] and not cfg["tf32"]
        assert not any(cfg[k] for k in ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel"))
        assert cfg["sequence_len"] >= 512


def test_unknown_profile_domain_or_missing_base():
    with pytest.raises(ValueError, match="unknown profile"):
        render_config("gpu_fp8", "chemistry", RUN)
    with pytest.raises(ValueError, match="unknown domain"):
        render_config("tiny", "biology", RUN)
    with pytest.raises(ValueError, match="no base_model"):
        render_config("tiny", "chemistry", {})


def test_deep_merge_and_hash():
    assert deep_merge({"a": {"x": 1, "y": 2}, "l": [1]}, {"a": {"y": 3}, "l": [2]}) == {"a": {"x": 1, "y": 3}, "l": [2]}
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1}) != config_hash({"a": 1, "b": 3})
    assert set(PROFILES) == {"tiny", "cpu_lora", "gpu_qlora"} and len(DOMAINS) == 4
