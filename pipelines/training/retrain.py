"""One domain's monthly retraining, end to end; shared by ``cbnano retrain`` and the ``domain_retraining`` DAG.

dataset → render + validate config → train (resumable) → merge (checked against the adapter) → evaluate
base, candidate and current production → gate → publish (or refuse, leaving nothing under ``versions/``).

Returns the summary the CLI prints: ``domain``, ``version``, ``published``, ``reason``, ``metrics``.

Base models per profile: ``tiny`` builds (once) a tiny random Llama under ``<model store>/base/tiny-llama``;
``cpu_lora`` uses ``<model store>/base/smollm2`` (``cbnano models import-base smollm2``);
``gpu_qlora`` takes the production base given as ``base_model`` (the lab's NFS path).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipelines.evaluation.gate import decide
from pipelines.evaluation.scoring import load_items
from pipelines.lake import read_jsonl, write_json
from pipelines.ops.metrics import emit_retrain
from pipelines.publishing.model_store import ModelStore
from pipelines.settings import Settings
from pipelines.training.configs import config_hash, render_config, validate_in_train_env, write_config
from pipelines.training.datasets import DatasetTooSmall, build_dataset
from pipelines.training.runner import (
    adapter_changed,
    check_merge,
    merge,
    run_dir_for,
    run_in_train_env,
    train,
)

EVAL_DIR = Path(__file__).resolve().parents[2] / "include" / "eval"
Log = Callable[[str], None]

# Model work runs in the training environment, never in Airflow's process (no torch there).
_BUILD_TINY = r"""
import json, sys
from pathlib import Path
from pipelines.training.tiny import build_tiny_llama, sample_corpus
path = build_tiny_llama(Path(sys.argv[1]), sample_corpus(Path(sys.argv[2])), vocab_size=512)
print(json.dumps({"base": str(path)}))
"""
_EVALUATE = r"""
import json, sys
from pipelines.evaluation.scoring import evaluate, load_items
from pipelines.lake import read_jsonl
from pathlib import Path
val = list(read_jsonl(Path(sys.argv[3])))
print(json.dumps(evaluate(sys.argv[1], load_items(Path(sys.argv[2])), val, val, device=sys.argv[4])))
"""


def token_counter(base: Path) -> Callable[[str], int]:
    """Count tokens with the base model's tokenizer (the ``tokenizers`` library: no torch needed)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(base / "tokenizer.json"))
    return lambda text: len(tok.encode(text).ids)


def evaluate_model(settings: Settings, model_dir: Path, domain: str, val_path: Path, gpu: int | None) -> dict:
    """``scoring.evaluate`` of one model, run in the training environment."""
    device = "cuda" if gpu is not None else "cpu"
    return dict(run_in_train_env(settings.train_python, _EVALUATE,
                                 [str(model_dir), str(EVAL_DIR / f"{domain}.jsonl"), str(val_path), device]))


def resolve_base(settings: Settings, profile: str, base_model: str | None = None) -> Path:
    """The base model folder for a profile (building the tiny one on first use)."""
    if base_model:
        return Path(base_model)
    if profile == "tiny":
        path = settings.model_store / "base" / "tiny-llama"
        if not (path / "config.json").is_file():
            run_in_train_env(settings.train_python, _BUILD_TINY, [str(path), str(settings.data_dir)], 600)
        return path
    if profile == "cpu_lora":
        path = settings.model_store / "base" / "smollm2"
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no SmolLM2 base at {path}: import it first (`cbnano models import-base smollm2`)")
        return path
    raise ValueError("profile gpu_qlora needs --base-model (the production base on NFS)")


def watchlist_domains() -> dict[str, str]:
    """Watch-list name (lower-case) → the watch list's domain column."""
    import csv

    from pipelines.ingestion.pubchem import WATCHLIST

    with open(WATCHLIST, newline="", encoding="utf-8") as fh:
        return {r["name"].strip().lower(): r.get("domain", "").strip() for r in csv.DictReader(fh)}


def _code_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _chart(path: Path, metrics: dict[str, dict[str, float]], losses: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    names = [n for n in ("base", "production", "candidate") if n in metrics]
    a.bar(names, [metrics[n]["mc_accuracy"] for n in names], color=["#999", "#4a7", "#37c"][:len(names)])
    a.set_title("multiple-choice accuracy")
    a.set_ylim(0, 1)
    b.plot(range(1, len(losses) + 1), losses)
    b.set_title("training loss")
    b.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _model_card(domain: str, version: str, base: Path, card: dict[str, Any], metrics: dict[str, Any],
                reason: str, profile: str) -> str:
    rows = "\n".join(f"| {m} | " + " | ".join(f"{metrics[k].get(m, float('nan')):.4f}" for k in metrics) + " |"
                     for m in ("mc_accuracy", "val_loss", "exact_match"))
    return (f"# CB Nano {domain} model {version}\n\nFine-tuned from `{base}` with the `{profile}` profile on "
            f"{card['train']} examples ({json.dumps(card['by_source'])}), dataset sha256 `{card['sha256']}`.\n\n"
            f"| metric | {' | '.join(metrics)} |\n|---|{'---|' * len(metrics)}\n{rows}\n\nGate: {reason}\n")


def resolve_month(interval_start: datetime | None, override: str | None = None,
                  now: datetime | None = None) -> str:
    """The month (``YYYY-MM``) a retraining run trains on: the override, else the run's data interval, else
    (a manual run with no interval) the last complete month before ``now``. Raises ValueError on a bad override.
    """
    if override:
        try:
            return datetime.strptime(override, "%Y-%m").strftime("%Y-%m")
        except ValueError:
            raise ValueError(f"month must be YYYY-MM, got {override!r}") from None
    if interval_start is not None:
        return interval_start.strftime("%Y-%m")
    first = (now or datetime.now(UTC)).replace(day=1)
    return (first - timedelta(days=1)).strftime("%Y-%m")


def prepare_dataset(settings: Settings, domain: str, profile: str, month: str,
                    base_model: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Build the month's dataset for ``domain`` with the profile's base tokenizer; returns (base, card).

    Raises :class:`DatasetTooSmall` when there is too little to train on.
    """
    base = resolve_base(settings, profile, base_model)
    items = load_items(EVAL_DIR / f"{domain}.jsonl")
    eval_texts = [it["question"] + " " + " ".join(it["choices"]) for it in items]
    sequence_len = int(render_config(profile, domain, {"base_model": str(base)})["sequence_len"])
    card = build_dataset(domain, settings.data_dir, settings.data_dir / "datasets" / domain / month,
                         token_counter(base), eval_texts, month=month, max_tokens=sequence_len - 96,
                         watchlist_domains=watchlist_domains())
    return base, card


def retrain(settings: Settings, domain: str, profile: str = "tiny", month: str | None = None,
            min_gain: float = 0.02, max_steps: int | None = None, base_model: str | None = None,
            gpu: int | None = None, log: Log | None = None,
            origin: dict[str, str] | None = None) -> dict[str, Any]:
    """Run the chain for one domain (see module docstring); returns the summary.

    ``origin`` (e.g. the Airflow dag and run ids) is recorded in the evaluation report and the manifest, so
    the model registry links each version to the run that made it.
    """
    month = month or datetime.now(UTC).strftime("%Y-%m")
    say = log or (lambda _m: None)
    try:
        base, card = prepare_dataset(settings, domain, profile, month, base_model)
    except DatasetTooSmall as exc:
        return {"domain": domain, "version": None, "published": False, "reason": f"refused: {exc}", "metrics": {}}
    run: dict[str, Any] = {"base_model": str(base), "seed": 42}
    if max_steps:
        run["max_steps"] = max_steps
    ds_dir = Path(card["files"]["train"]).parent
    say(f"dataset: {card['train']} train / {card['validation']} validation examples, sha256 {card['sha256'][:12]}")
    cfg = render_config(profile, domain, {**run, "datasets": [
        {"path": card["files"]["train"], "type": "alpaca", "ds_type": "json"}]})
    run_dir = run_dir_for(settings.runs_dir, domain, month, card["sha256"], cfg)
    version = f"{month}.{card['sha256'][:6]}{config_hash(cfg)[:4]}"  # same inputs, same version
    store = ModelStore(settings.model_store)
    done = store.version_dir(domain, version) / "manifest.json"
    if done.is_file():  # same month, dataset and config: that model exists already; nothing to redo
        published = json.loads(done.read_text())
        return {"domain": domain, "version": version, "published": False,
                "reason": f"unchanged: {version} was already published from this dataset and config",
                "metrics": {"candidate": published.get("metrics", {})}, "run_dir": str(run_dir)}
    problems = validate_in_train_env([write_config(cfg, run_dir / "config.rendered.yml")], settings.train_python)
    if problems:
        raise ValueError("config rejected before training: " + "; ".join(problems))
    result = train(cfg, run_dir, settings.train_python, gpu=gpu, log=say)
    if not adapter_changed(result.adapter_dir):
        raise RuntimeError(f"training left the adapter unchanged in {result.adapter_dir}")
    merged = merge(run_dir, settings.train_python, log=say)
    val_path = Path(card["files"]["validation"])
    prompts = [r["instruction"] for r in list(read_jsonl(val_path))[:3]] or ["Describe the material."]
    merge_diff = check_merge(run_dir, settings.train_python, prompts)
    metrics = {"base": evaluate_model(settings, base, domain, val_path, gpu)}
    prod = store.production(domain)
    if prod:
        metrics["production"] = evaluate_model(settings, store.version_dir(domain, prod) / "merged", domain,
                                               val_path, gpu)
    metrics["candidate"] = evaluate_model(settings, merged, domain, val_path, gpu)
    decision = decide(metrics["candidate"], metrics["base"], metrics.get("production"), "mc_accuracy", min_gain,
                      max_regression={"val_loss": 0.25, "exact_match": 0.05})
    say(decision.reason)
    report = {"domain": domain, "version": version, "metrics": metrics, "gate": decision.to_dict(),
              "merge_max_abs_logit_diff": merge_diff, "train_losses": result.losses, "dataset": card,
              "origin": origin or {}, "finished_at": datetime.now(UTC).isoformat(timespec="seconds")}
    write_json(run_dir / "eval.json", report)  # the run's gate decision with its numbers, published or not
    summary = {"domain": domain, "version": version if decision.publish else None, "published": False,
               "reason": decision.reason, "metrics": metrics, "run_dir": str(run_dir)}
    emit_retrain(settings, {**summary, "published": decision.publish}, result.losses)
    if not decision.publish:
        return summary
    with tempfile.TemporaryDirectory(dir=run_dir) as tmp:
        content = Path(tmp)
        shutil.copytree(merged, content / "merged")
        (content / "adapter").mkdir()
        for f in result.adapter_dir.glob("adapter_*"):
            shutil.copy2(f, content / "adapter" / f.name)
        shutil.copy2(run_dir / "config.yml", content / "config.yml")
        shutil.copy2(ds_dir / "dataset_card.json", content / "dataset_card.json")
        write_json(content / "eval.json", report)
        _chart(content / "eval.png", metrics, result.losses)
        (content / "MODEL_CARD.md").write_text(_model_card(domain, version, base, card, metrics, decision.reason,
                                                           profile))
        store.publish(domain, version, content, {
            "base_model": str(base), "profile": profile, "dataset_sha256": card["sha256"], "config": cfg,
            "metrics": metrics["candidate"], "gate": decision.to_dict(), "code_revision": _code_revision(),
            "origin": origin or {}})
    store.apply_retention(domain, keep_last=3)
    return {**summary, "published": True}
