"""Turn a finished retraining run into a model-store version: portable adapter, merged model, card, report.

Every finished candidate becomes a version, whether or not the gate moved production to it. What goes in:

* ``adapter/`` — the LoRA adapter with ``adapter_config.json``'s ``base_model_name_or_path`` set to the base's
  *store name* (``smollm2``), not the training host's path: any host that mounts the store finds the base
  under ``base/<name>`` (or where ``base/bases.json`` says), and System A loads the adapter as it is;
* ``merged/`` — base + adapter as one model, its config naming the base the same way;
* ``MODEL_CARD.md`` — a Hugging Face model card: YAML front matter (``base_model``, ``library_name: peft``,
  tags, the evaluation results as ``model-index``), then the numbers and the gate's decision in prose;
* ``eval.json`` (scores per item, comparisons with their intervals, the decision), ``eval.png``,
  ``config.yml``, ``dataset_card.json``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from pipelines.evaluation.gate import LABELS
from pipelines.lake import write_json
from pipelines.publishing.model_store import ModelStore


def portable_adapter(src: Path, dest: Path, base_name: str) -> None:
    """Copy the adapter files of ``src`` to ``dest``, naming the base by its store name."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("adapter_*")):
        shutil.copy2(f, dest / f.name)
    cfg_path = dest / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = base_name
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def portable_merged(src: Path, dest: Path, base_name: str) -> None:
    """Copy the merged model, its config naming the base by its store name (no host path)."""
    shutil.copytree(src, dest)
    cfg_path = dest / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if "_name_or_path" in cfg:
        cfg["_name_or_path"] = base_name
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _measured_on(metric: str, domain: str) -> str:
    if metric == "heldout_loss":
        return "held-out documents"
    if metric.startswith("knowledge_"):
        return f"{domain} knowledge probe of the month's documents"
    return f"{domain} multiple choice"


def model_card(
    domain: str, version: str, base_name: str, profile: str, dataset: dict[str, Any], report: dict[str, Any]
) -> str:
    """The Hugging Face model card (YAML front matter + prose) of one version."""
    metrics = report["metrics"]
    gate = report["gate"]
    cand = metrics.get("candidate", {})
    results = [
        {
            "type": m,
            "name": f"{LABELS.get(m, m)} ({_measured_on(m, domain)})",
            "value": round(float(v), 4),
        }
        for m, v in sorted(cand.items())
    ]
    front = {
        "base_model": base_name,
        "library_name": "peft",
        "pipeline_tag": "text-generation",
        "tags": ["cbnano", domain, "lora", "qlora" if profile == "gpu_qlora" else profile, "axolotl"],
        "model-index": [
            {
                "name": f"cbnano-{domain}-{version}",
                "results": [
                    {
                        "task": {"type": "text-generation"},
                        "dataset": {
                            "name": f"cbnano {domain} evaluation {dataset.get('month')}",
                            "type": f"cbnano-{domain}",
                        },
                        "metrics": results,
                    }
                ],
            }
        ],
    }
    roles = [r for r in ("base", "production", "candidate") if r in metrics]
    names = sorted({m for r in roles for m in metrics[r]})
    table = "\n".join(
        f"| {LABELS.get(m, m)} | "
        + " | ".join(f"{metrics[r].get(m, float('nan')):.4f}" for r in roles)
        + " |"
        for m in names
    )
    comps = "\n".join(
        f"| {LABELS.get(c['metric'], c['metric'])} vs {c['baseline']} | {c['n']} | {c['gain']:+.4f} | "
        f"{c['ci_low']:+.4f}..{c['ci_high']:+.4f} | {c['mde']:.4f} |"
        for c in gate["comparisons"]
    )
    body = (
        f"# CB Nano {domain} adapter {version}\n\n"
        f"LoRA adapter for `{base_name}` (the model store's `base/{base_name}`), trained with the `{profile}` "
        f"profile on {dataset['train']} rows (by kind {json.dumps(dataset.get('by_kind', {}))}; by source "
        f"{json.dumps(dataset['by_source'])}); knowledge probe {json.dumps(dataset.get('probe', {}))}; through the base "
        f"model's chat template; dataset sha256 `{dataset['sha256']}`. System A serves it as "
        f"`{domain}` on top of the base.\n\n"
        f"## Evaluation\n\n| metric | {' | '.join(roles)} |\n|---|{'---|' * len(roles)}\n{table}\n\n"
        f"Held-out loss is over {dataset.get('validation_documents', '?')} documents the training split never "
        f"saw. Paired comparisons (gain: positive is better; 95% paired-bootstrap interval; the smallest "
        f"effect detectable with 80% power):\n\n| comparison | n | gain | 95% CI | detectable |\n"
        f"|---|---|---|---|---|\n{comps}\n\n## Gate\n\n{gate['reason']}\n"
    )
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + body


def chart(path: Path, metrics: dict[str, dict[str, float]], losses: list[float]) -> None:
    """``eval.png``: closed-book knowledge (the gate's calibrated p(correct)) and multiple-choice accuracy per
    model, and the training loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    names = [n for n in ("base", "production", "candidate") if n in metrics]
    colors = {"base": "#999", "production": "#4a7", "candidate": "#37c"}
    for ax, metric in zip(axes[:2], ("knowledge_closed_doc", "mc_accuracy"), strict=True):
        ax.bar(names, [metrics[n].get(metric, float("nan")) for n in names], color=[colors[n] for n in names])
        ax.set_title(LABELS.get(metric, metric))
    axes[0].set_ylim(0, 1)
    axes[1].set_ylim(0, 1)
    axes[2].plot(range(1, len(losses) + 1), losses)
    axes[2].set_title("training loss")
    axes[2].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def register_candidate(
    store: ModelStore,
    domain: str,
    version: str,
    *,
    base_name: str,
    profile: str,
    run_dir: Path,
    adapter_dir: Path,
    merged: Path,
    dataset_dir: Path,
    report: dict[str, Any],
    losses: list[float],
    manifest: dict[str, Any],
    promote: bool,
    actor: str,
    allow_test_models: bool,
) -> Path:
    """Publish the run as ``<domain>/versions/<version>`` (production moves only with ``promote``)."""
    with tempfile.TemporaryDirectory(dir=run_dir) as tmp:
        content = Path(tmp)
        portable_merged(merged, content / "merged", base_name)
        portable_adapter(adapter_dir, content / "adapter", base_name)
        shutil.copy2(run_dir / "config.yml", content / "config.yml")
        shutil.copy2(dataset_dir / "dataset_card.json", content / "dataset_card.json")
        write_json(content / "eval.json", report)
        chart(content / "eval.png", report["metrics"], losses)
        (content / "MODEL_CARD.md").write_text(
            model_card(domain, version, base_name, profile, report["dataset"], report)
        )
        return store.publish(
            domain,
            version,
            content,
            manifest,
            promote=promote,
            actor=actor,
            reason=report["gate"]["reason"],
            allow_test_models=allow_test_models,
        )
