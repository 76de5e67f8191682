"""Real axolotl 0.19 in .venv-train on the tiny profile: configs validate, LoRA and QLoRA train, merge works."""

import json
from pathlib import Path

import pytest
import torch

from pipelines.trainenv import StepError
from pipelines.training.configs import DOMAINS, PROFILES, render_config, validate_in_train_env, write_config
from pipelines.training.runner import TrainingError, adapter_changed, check_merge, interpolate, merge, train

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TRAIN_PYTHON = ROOT / ".venv-train" / "bin" / "python"


@pytest.fixture(scope="module")
def train_python():
    assert TRAIN_PYTHON.exists(), "the training environment is missing: run `make setup-train`"
    return str(TRAIN_PYTHON)


def test_multiprocess_in_the_training_environment_is_the_build_for_its_python(train_python):
    """multiprocess ships one wheel per Python minor (py310, py311, ...), all installable everywhere. An installer
    that took the py310 one on 3.11 broke every axolotl run at its first dataset save (``fork_exec() takes
    exactly 23 arguments (21 given)`` when datasets spawns the resource tracker). Wheel tags alone cannot
    tell: xformers' ``py39`` wheel is meant for every Python from 3.9 on."""
    import subprocess

    probe = (
        "import sys; from importlib.metadata import distribution; "
        "tags = [l.split()[-1] for l in distribution('multiprocess').read_text('WHEEL').splitlines() "
        "if l.startswith('Tag:')]; "
        "from multiprocess import resource_tracker; resource_tracker.ensure_running(); "
        "print(f'py3{sys.version_info.minor}', *tags)"
    )
    out = subprocess.run([train_python, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    mine, *tags = out.stdout.split()
    assert [t.split("-")[0] for t in tags] == [mine], f"multiprocess wheel {tags} on {mine}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from pipelines.training.tiny import build_tiny_llama, sample_corpus

    return build_tiny_llama(tmp_path_factory.mktemp("base") / "tiny-llama", sample_corpus(), vocab_size=512)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("ds")
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"What is the molecular formula of compound {i}?"},
                {"role": "assistant", "content": f"The formula of compound {i} is C{i}H{2 * i + 2}."},
            ]
        }
        for i in range(1, 41)
    ]
    (d / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return d / "train.jsonl"


def run_values(tiny, dataset, **extra):
    return {
        "base_model": str(tiny),
        "datasets": [
            {
                "path": str(dataset),
                "type": "chat_template",
                "ds_type": "json",
                "field_messages": "messages",
                "roles_to_train": ["assistant"],
                "train_on_eos": "turn",
            }
        ],
        **extra,
    }


def test_every_profile_and_domain_validates(train_python, tiny, dataset, tmp_path):
    paths = [
        write_config(render_config(p, d, run_values(tiny, dataset)), tmp_path / f"{p}-{d}.yml")
        for p in PROFILES
        for d in DOMAINS
    ]
    assert validate_in_train_env(paths, train_python) == []


def test_keys_axolotl_would_drop_are_rejected(train_python, tiny, dataset, tmp_path):
    cfg = render_config("tiny", "thermal", run_values(tiny, dataset, lora_rank=8, learning_rat=0.1))
    problems = validate_in_train_env([write_config(cfg, tmp_path / "typo.yml")], train_python)
    assert len(problems) == 1 and "learning_rat, lora_rank" in problems[0]


def test_packing_without_a_packing_safe_attention_is_rejected(train_python, tiny, dataset, tmp_path):
    """axolotl's own verdict (attn_decontaminates_packing) is required, not just our list of backends."""
    cfg = render_config("cpu_lora", "thermal", run_values(tiny, dataset, sample_packing=True))
    assert cfg["sample_packing"] and cfg["attn_implementation"] == "sdpa"
    cfg.pop("attn_implementation")
    problems = validate_in_train_env([write_config(cfg, tmp_path / "packed.yml")], train_python)
    assert len(problems) == 1 and "lets packed examples attend to each other" in problems[0]


def test_sdpa_keeps_packed_examples_apart(train_python, tiny):
    """What the profiles rely on: with the padding mask dropped (axolotl does so for packed sdpa rows), no
    KV cache (axolotl trains with use_cache=False) and position ids restarting per example, each example's
    logits are what it gets alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny, attn_implementation="sdpa").eval()
    a = tok("The formula of compound 3 is C3H8.", add_special_tokens=False).input_ids
    b = tok("Ceria stores oxygen.", add_special_tokens=False).input_ids
    packed = torch.tensor([a + b])
    positions = torch.tensor([list(range(len(a))) + list(range(len(b)))])
    with torch.no_grad():
        together = model(input_ids=packed, position_ids=positions, use_cache=False).logits[0]
        alone_b = model(input_ids=torch.tensor([b]), use_cache=False).logits[0]
        leaky = model(
            input_ids=packed, attention_mask=torch.ones_like(packed), position_ids=positions, use_cache=False
        ).logits[0]
    assert torch.allclose(together[len(a) :], alone_b, atol=1e-5)
    assert not torch.allclose(leaky[len(a) :], alone_b, atol=1e-3)  # a plain padding mask would leak


def test_tiny_lora_trains_resumes_and_merges(train_python, tiny, dataset, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = render_config("tiny", "catalysis", run_values(tiny, dataset, max_steps=6, save_steps=3))
    run_dir = tmp_path / "run"
    lines = []
    first = train(cfg, run_dir, train_python, log=lines.append)
    assert adapter_changed(first.adapter_dir)
    assert len(first.losses) >= 5 and first.resumed_from is None
    assert any("loss" in line for line in lines) and (run_dir / "train.log").is_file()
    # a retried task finds the checkpoints and resumes from the newest one
    again = train(cfg, run_dir, train_python)
    assert again.resumed_from and again.resumed_from.endswith("checkpoint-6")

    merged = merge(run_dir, train_python)
    model = AutoModelForCausalLM.from_pretrained(merged)
    tok = AutoTokenizer.from_pretrained(merged)
    base = AutoModelForCausalLM.from_pretrained(tiny)
    ids = tok("The formula of compound 3 is", return_tensors="pt").input_ids
    merged_logits, base_logits = model(ids).logits, base(ids).logits
    assert merged_logits.isfinite().all()
    assert (merged_logits - base_logits).abs().max() > 0  # the merge carried the trained delta
    # and its weights are base + scale * B @ A, tensor by tensor
    report = check_merge(tiny, run_dir / "out", merged, train_python)
    assert report["max_rel_diff"] < 1e-5 and report["changed"] == report["lora_tensors"] > 0
    assert report["others_changed"] == [] and report["device"] == "cpu"
    # a merged weight that is not base + adapter fails the check
    from safetensors.torch import load_file, save_file

    weights = load_file(merged / "model.safetensors")
    name = next(k for k in weights if k.endswith("q_proj.weight"))
    weights[name] = weights[name] * 1.5
    save_file(weights, merged / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(TrainingError, match="merged weights differ from base"):
        check_merge(tiny, run_dir / "out", merged, train_python)

    # keeping half of the trained delta (cbnano.adapter_scale): every B halved, the rest as trained
    half = tmp_path / "half"
    moved = interpolate(run_dir / "out", half, 0.5, train_python)
    trained = load_file(run_dir / "out" / "adapter_model.safetensors")
    halved = load_file(half / "adapter_model.safetensors")
    assert moved["scaled"] == sum(".lora_B." in k for k in trained) > 0 and halved.keys() == trained.keys()
    for name, tensor in trained.items():
        assert torch.equal(halved[name], tensor * 0.5 if ".lora_B." in name else tensor), name
    assert (half / "adapter_config.json").read_bytes() == (
        run_dir / "out" / "adapter_config.json"
    ).read_bytes()
    # the merge takes the scaled adapter: its check passes, and the trained adapter's no longer does
    merged = merge(run_dir, train_python, adapter_dir=half)
    assert check_merge(tiny, half, merged, train_python)["max_rel_diff"] < 1e-5
    with pytest.raises(TrainingError, match="merged weights differ from base"):
        check_merge(tiny, run_dir / "out", merged, train_python)
    with pytest.raises(StepError, match="--scale must be in"):
        interpolate(run_dir / "out", tmp_path / "none", 1.5, train_python)
    assert not (tmp_path / "none").exists()

    # both adapters scored on one base, one under a role name PEFT cannot take as a module name ("." in it)
    from pipelines.evaluation.evaluate import evaluate_roles
    from pipelines.settings import load_settings

    settings = load_settings({"CBNANO_HOME": str(tmp_path / "home"), "CBNANO_TRAIN_PYTHON": train_python})
    roles = {"base": (tiny, None), "real-1": (tiny, run_dir / "out"), "realx0.5-1": (tiny, half)}
    heldout = tmp_path / "val.jsonl"
    rows = [json.loads(line) for line in dataset.read_text().splitlines()[:3]]
    heldout.write_text("".join(json.dumps({**r, "doc": f"doc{i}"}) + "\n" for i, r in enumerate(rows)))
    scored = evaluate_roles(settings, "catalysis", roles, heldout, False, None, tmp_path / "spec.json")
    general = scored["per_item"]["general_loss"]
    assert set(general) == set(roles) and len(general["base"]) == 160
    assert general["real-1"] != general["realx0.5-1"] != general["base"]  # each role its own adapter


def test_tiny_qlora_trains_on_cpu(train_python, tiny, dataset, tmp_path):
    cfg = render_config(
        "tiny",
        "chemistry",
        run_values(tiny, dataset, adapter="qlora", load_in_4bit=True, max_steps=4, save_steps=4),
    )
    result = train(cfg, tmp_path / "qrun", train_python)
    assert adapter_changed(result.adapter_dir) and result.losses
    assert json.loads((result.adapter_dir / "adapter_config.json").read_text())["r"] == 8
    # the merge is base + adapter exactly (no NF4 round trip of embeddings or lm_head), as System A serves it
    merged = merge(tmp_path / "qrun", train_python)
    report = check_merge(tiny, result.adapter_dir, merged, train_python)
    assert report["max_rel_diff"] < 1e-5 and report["others_changed"] == []
