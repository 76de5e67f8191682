"""Evaluate a retraining run's models (base, production, candidate) on the GPU slot the task holds.

Builds the spec for ``pipelines.training.steps.evaluate`` and runs it in the training environment with the
leased GPU visible (``CUDA_VISIBLE_DEVICES=<gpu>``), or on the CPU when no GPU was leased. Returns what the
gate and the report need: each role's mean metrics and ``per_item`` as metric → role → item id → score, on
identical ids for every role.

    result = evaluate_roles(settings, domain, roles, heldout_path, load_in_4bit=True, gpu=0, spec_path=...)
    decide(result["per_item"])
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pipelines.assets import asset
from pipelines.contracts import Evaluation
from pipelines.settings import Settings


def eval_items_path(domain: str) -> Path:
    """The domain's fixed multiple-choice set."""
    return asset("include", "eval", f"{domain}.jsonl")


def general_passages() -> list[dict[str, str]]:
    """Every domain's multiple-choice items as statements (question, then the right answer): the general
    passages of the forgetting guard ``general_loss``. Ids ``general:<item id>``."""
    from pipelines.evaluation.scoring import load_items
    from pipelines.settings import DOMAINS

    out = []
    for domain in DOMAINS:
        for it in load_items(eval_items_path(domain)):
            q = it["question"].rstrip()
            out.append({"id": f"general:{it['id']}", "text": f"{q} {it['choices'][it['answer']]}."})
    return out


def evaluate_roles(
    settings: Settings,
    domain: str,
    roles: dict[str, tuple[Path, Path | None]],
    heldout: Path,
    load_in_4bit: bool,
    gpu: int | None,
    spec_path: Path,
    timeout_s: float = 4 * 3600,
    probe: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """Score every role — ``{role: (base folder, adapter folder or None)}`` — on the domain's items, the
    held-out rows and the knowledge ``probe``; returns ``{"metrics": {role: {metric: mean}}, "per_item": {metric: {role: {id: score}}},
    "device", "dtype", "seconds", "peak_gpu_gib"}``.

    Roles sharing a base are scored in one model load; ``progress`` gets a line as each role is scored. Raises ValueError when the roles were not scored on
    identical items (which the gate needs).
    """
    from pipelines.settings import DOMAINS
    from pipelines.trainenv import run_step

    groups: dict[str, dict[str, str | None]] = {}
    for role, (base, adapter) in roles.items():
        groups.setdefault(str(base), {})[role] = str(adapter) if adapter else None
    spec = {
        "groups": [{"base": b, "roles": r} for b, r in groups.items()],
        # the forgetting guard's multiple-choice items: every domain's (160), the domain's own first; 40 items
        # gave mc p(correct) an interval of +-0.08, wider than any margin a useful guard can have
        "items": [str(eval_items_path(d)) for d in (domain, *(x for x in DOMAINS if x != domain))],
        "heldout": str(heldout),
        "probe": str(probe) if probe else None,
        "general": general_passages(),
        "domain": domain,
        "load_in_4bit": load_in_4bit,
    }
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec, indent=2))
    out = run_step(
        settings.train_python,
        "evaluate",
        ["--spec", str(spec_path)],
        gpu=gpu,
        timeout_s=timeout_s,
        on_progress=progress,  # a line per role scored
    )
    per_item: dict[str, dict[str, dict[str, float]]] = {}
    for role, scored in out["roles"].items():
        for metric, scores in scored["per_item"].items():
            per_item.setdefault(metric, {})[role] = scores
    for metric, by_role in per_item.items():
        ids = {frozenset(s) for s in by_role.values()}
        if len(ids) != 1:
            raise ValueError(f"{metric}: the models were scored on different items")
    return {
        "metrics": {role: scored["metrics"] for role, scored in out["roles"].items()},
        "per_item": per_item,
        "device": out.get("device"),
        "dtype": out.get("dtype"),
        "seconds": out.get("seconds"),
        "peak_gpu_gib": out.get("peak_gpu_gib"),
        "items": out.get("items"),
        "heldout": out.get("heldout"),
        "probe": out.get("probe"),
    }
