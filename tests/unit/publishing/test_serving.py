"""System A hand-off against the vLLM stand-in (real HTTP): layout, idempotence, failures, serve-config."""

import json

import pytest

from pipelines.publishing.model_store import ModelStore
from pipelines.publishing.serving import (
    SystemAError,
    VLLMClient,
    hand_off,
    serve_command,
    served_adapter,
    serving_state,
)
from pipelines.settings import get_settings, reset_settings_cache
from pipelines.vllm_standin import VLLMStandIn

pytestmark = pytest.mark.unit


def publish(store, tmp_path, domain, version, base="smollm2", r=16, promote=True):
    content = tmp_path / f"content-{domain}-{version}"
    (content / "adapter").mkdir(parents=True)
    (content / "adapter" / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": base, "r": r, "lora_alpha": 2 * r, "peft_type": "LORA"})
    )
    (content / "adapter" / "adapter_model.safetensors").write_bytes(b"weights of " + version.encode())
    store.publish(domain, version, content, {"base_model": base}, promote=promote, actor="test")


@pytest.fixture
def lab(cbnano_env, tmp_path, monkeypatch):
    """A model store with catalysis v1 in production, and a running stand-in for System A."""
    srv = VLLMStandIn(base="smollm2").start()
    monkeypatch.setenv("CBNANO_SYSTEM_A_URL", srv.url)
    reset_settings_cache()
    store = ModelStore(get_settings().model_store)
    publish(store, tmp_path, "catalysis", "v1")
    yield get_settings(), store, srv
    srv.stop()


def test_served_adapter_is_the_production_versions_own_folder(lab, monkeypatch):
    settings, store, _ = lab
    a = served_adapter(settings, "catalysis")
    assert a.version == "v1" and a.base == "smollm2" and a.rank == 16
    assert a.path == str(store.version_dir("catalysis", "v1").resolve() / "adapter")
    monkeypatch.setenv("CBNANO_SYSTEM_A_STORE", "/mnt/models")  # System A mounts the store elsewhere
    reset_settings_cache()
    assert served_adapter(get_settings(), "catalysis").path == "/mnt/models/catalysis/versions/v1/adapter"
    assert served_adapter(settings, "thermal") is None


def test_hand_off_loads_confirms_and_is_idempotent(lab):
    settings, store, srv = lab
    out = hand_off(settings, "catalysis")
    assert out["state"] == "confirmed" and out["action"] == "loaded" and out["version"] == "v1"
    assert srv.adapters == {"catalysis": out["path"]}
    loads = [r for r in srv.requests if r[1] == "/v1/load_lora_adapter"]
    again = hand_off(settings, "catalysis")
    assert again["action"] == "already loaded"
    assert [r for r in srv.requests if r[1] == "/v1/load_lora_adapter"] == loads  # nothing sent twice
    assert serving_state(settings, "catalysis")["confirmed_at"]


def test_promote_and_rollback_replace_the_adapter_under_the_domains_name(lab, tmp_path):
    settings, store, srv = lab
    hand_off(settings, "catalysis")
    publish(store, tmp_path, "catalysis", "v2")
    out = hand_off(settings, "catalysis")
    assert out["action"] == "replaced" and srv.adapters["catalysis"].endswith("/v2/adapter")
    body = [b for m, p, b in srv.requests if p == "/v1/load_lora_adapter"][-1]
    assert body == {"lora_name": "catalysis", "lora_path": out["path"], "load_inplace": True}
    store.rollback("catalysis", actor="test")
    assert hand_off(settings, "catalysis")["version"] == "v1"
    assert srv.adapters["catalysis"].endswith("/v1/adapter")


def test_a_vllm_without_in_place_loading_gets_unload_then_load(lab, tmp_path):
    settings, store, srv = lab
    srv.inplace = False  # refuses a loaded name even with load_inplace, as older vLLM does
    hand_off(settings, "catalysis")
    publish(store, tmp_path, "catalysis", "v2")
    out = hand_off(settings, "catalysis")
    assert out["state"] == "confirmed" and out["action"] == "unloaded and loaded"
    assert srv.adapters["catalysis"].endswith("/v2/adapter")


def test_system_a_down_then_up(lab, monkeypatch):
    settings, store, srv = lab
    sent = []
    monkeypatch.setattr("pipelines.ops.alerts.send_alert", lambda *a, **k: sent.append(a) or ["webhook"])
    hand_off(settings, "catalysis")
    port = srv.port
    srv.stop()  # System A goes down (and forgets its adapters, as a restart does)
    fast = VLLMClient(settings.system_a_url, attempts=2, backoff_s=0.01, timeout_s=2)
    out = hand_off(settings, "catalysis", client=fast)
    assert out["state"] == "failed" and "did not answer" in out["error"] and "2 attempt(s)" in out["error"]
    assert store.production("catalysis") == "v1"  # the publish stands
    state = serving_state(settings, "catalysis")
    assert (
        state["state"] == "failed" and state["confirmed"]["version"] == "v1"
    )  # what System A last confirmed
    assert sent and "System A did not take catalysis v1" in sent[0][1]
    srv.port = port
    srv.start()  # back up, empty
    out = hand_off(settings, "catalysis")
    assert out["state"] == "confirmed" and srv.adapters["catalysis"] == out["path"]


def test_refusals_are_not_retried_and_carry_vllms_message(lab, tmp_path):
    settings, store, srv = lab
    client = VLLMClient(srv.url, attempts=3, backoff_s=0.01)
    with pytest.raises(
        SystemAError, match="HTTP 404: Loading lora catalysis failed: No adapter found for /nowhere"
    ) as err:
        client.load("catalysis", "/nowhere")
    assert err.value.status == 404
    assert len([r for r in srv.requests if r[1] == "/v1/load_lora_adapter"]) == 1
    with pytest.raises(SystemAError, match="HTTP 404: The lora adapter 'thermal' cannot be found"):
        client.unload("thermal")


def test_token_is_sent_when_set(lab, monkeypatch):
    settings, store, srv = lab
    srv.token = "sekret"
    out = hand_off(settings, "catalysis", alert=False)
    assert out["state"] == "failed" and "HTTP 401" in out["error"]
    monkeypatch.setenv("CBNANO_SYSTEM_A_TOKEN", "sekret")
    reset_settings_cache()
    assert hand_off(get_settings(), "catalysis")["state"] == "confirmed"
    assert "sekret" not in json.dumps(serving_state(get_settings(), "catalysis"))


def test_not_configured_and_no_production(cbnano_env):
    assert hand_off(cbnano_env, "catalysis") == {"domain": "catalysis", "state": "not_configured"}


def test_serve_command(lab, tmp_path, monkeypatch):
    settings, store, srv = lab
    from pipelines.training.configs import lora_rank

    publish(store, tmp_path, "thermal", "t1", r=64)
    cmd = serve_command(settings, min_rank=lora_rank(settings.train_profile))
    assert cmd[:3] == ["vllm", "serve", str(store.base_dir("smollm2"))]
    assert cmd[cmd.index("--served-model-name") + 1] == "smollm2" and "--enable-lora" in cmd
    assert cmd[cmd.index("--max-lora-rank") + 1] == "64"  # the largest adapter (and the profile's r)
    assert "--enable-auto-tool-choice" in cmd and cmd[cmd.index("--tool-call-parser") + 1] == "hermes"
    mods = cmd[cmd.index("--lora-modules") + 1 :]
    assert mods == [
        f"thermal={served_adapter(settings, 'thermal').path}",  # in DOMAINS order
        f"catalysis={served_adapter(settings, 'catalysis').path}",
    ]
    publish(store, tmp_path, "materials", "m1", base="tiny-llama")
    with pytest.raises(ValueError, match="different bases"):
        serve_command(settings)


def test_serve_command_without_production_serves_the_one_imported_base(cbnano_env):
    store = ModelStore(cbnano_env.model_store)
    with pytest.raises(ValueError, match="nothing tells which base to serve"):
        serve_command(cbnano_env)
    (cbnano_env.model_store / "base" / "smollm2").mkdir(parents=True)
    (cbnano_env.model_store / "base" / "smollm2" / "config.json").write_text("{}")
    assert store.imported_bases() == ["smollm2"]
    cmd = serve_command(cbnano_env)
    assert cmd[cmd.index("--served-model-name") + 1] == "smollm2"
    (cbnano_env.model_store / "base" / "other").mkdir()
    (cbnano_env.model_store / "base" / "other" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"imported: other, smollm2"):  # two: which one is not guessed
        serve_command(cbnano_env)


def test_cli_promote_hands_off_and_serve_config_prints_the_command(lab, tmp_path, capsys):
    from pipelines.cli import main

    settings, store, srv = lab
    publish(store, tmp_path, "catalysis", "v2", promote=False)
    assert (
        main(["models", "promote", "--domain", "catalysis", "--version", "v2", "--reason", "reviewed"]) == 0
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out == {"domain": "catalysis", "action": "promote", "production": "v2", "system_a": "confirmed"}
    assert srv.adapters["catalysis"].endswith("/v2/adapter")
    srv.stop()
    assert main(["models", "rollback", "--domain", "catalysis"]) == 0  # System A down: the rollback stands
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["system_a"] == "failed"
    assert "production moved, but System A did not take it" in captured.err
    assert store.production("catalysis") == "v1"
    assert main(["models", "serve-config"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve ") and "--enable-lora" in line
    assert "catalysis=" in line and "/catalysis/versions/v1/adapter" in line
