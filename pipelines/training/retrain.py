"""One domain's monthly retraining, end to end; shared by ``cbnano retrain`` and the ``domain_retraining`` DAG.

base (fail fast) → dataset → render + validate config → train (resumable) → keep the profile's share of the
trained delta (``cbnano.adapter_scale``) → merge → merge check → evaluate
base, current production and candidate per item → gate → register the candidate as a version (production
moves only if the gate passed and, with ``CBNANO_REQUIRE_APPROVAL``, only once a person approves it:
:mod:`pipelines.publishing.approval`) → retention.

A run starts from a :class:`~pipelines.training.request.RetrainRequest` that its caller (the CLI, the DAG's
``plan``) resolved once: domain, month, profile, base, bar, step cap. No step here re-checks or re-defaults
those; with no usable base the request was refused before anything was built or written.
Model work (training, merge check, evaluation) runs in the training environment on the GPU the task leased
(``gpu``), or on the CPU. A candidate trained on a test model (the ``tiny`` profile, a random-init base) never
becomes production unless ``CBNANO_ALLOW_TEST_MODELS=1``.

:func:`retrain` runs the steps, each a function of its own: :func:`prepare_dataset` → :func:`plan_run`
(config, run folder, version) → :func:`reuse_existing` (that version exists: nothing to redo) →
:func:`train_candidate` (validate, train, merge, merge check) → :func:`judge_candidate` (evaluate, gate) →
:func:`publish_candidate` (report, register, retention, System A).

Returns the summary (:class:`pipelines.contracts.RetrainSummary`): ``domain``, ``version`` (the version registered, or None when the run stopped before
training), ``published`` (production moved to it), ``reason`` (the gate's line, with its 95% interval),
``metrics`` (role → metric → mean), plus ``run_dir``, ``timings`` (seconds per step) and ``train_stats``.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.assets import watchlist_rows
from pipelines.contracts import ChoiceItem, DatasetCard, Evaluation, RetrainSummary
from pipelines.evaluation.evaluate import eval_items_path, evaluate_roles
from pipelines.evaluation.gate import GateDecision, decide, overrule
from pipelines.evaluation.scoring import load_items
from pipelines.lake import write_json
from pipelines.ops.metrics import emit_retrain
from pipelines.publishing.bases import BaseModel, locate_base
from pipelines.publishing.model_store import ModelStore, default_actor
from pipelines.publishing.release import register_candidate
from pipelines.settings import Settings
from pipelines.training.base_models import resolve_base
from pipelines.training.configs import (
    adapter_scale,
    config_hash,
    deep_merge,
    render_config,
    validate_in_train_env,
    write_config,
)
from pipelines.training.dataset_step import DatasetSpec, build_in_child
from pipelines.training.knowledge import probe_baselines
from pipelines.training.request import RetrainRequest
from pipelines.training.runner import (
    Log,
    TrainResult,
    adapter_changed,
    check_merge,
    interpolate,
    merge,
    run_dir_for,
    train,
)

KEEP_VERSIONS = 3


def watchlist_domains() -> dict[str, str]:
    """Watch-list name (lower-case) → the watch list's domain column."""
    return {row["name"].lower(): row["domain"] for row in watchlist_rows()}


def _code_revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _actor(origin: dict[str, str]) -> str:
    """Who a retraining run acts as in the model store's history: the Airflow run, else the user."""
    return (
        f"airflow:{origin['dag_id']}/{origin['run_id']}"
        if origin and origin.get("dag_id")
        else default_actor()
    )


@dataclass(frozen=True)
class Prepared:
    """What a request's run is built on: the base, the month's dataset, the domain's multiple-choice items and
    the axolotl config rendered once (profile, domain overlay, base, seed and the request's overrides; the
    datasets are laid in by :func:`plan_run`)."""

    base: BaseModel
    card: DatasetCard
    items: list[ChoiceItem]
    cfg: dict[str, Any]


def prepare_dataset(settings: Settings, request: RetrainRequest) -> Prepared:
    """Open the request's base (building the tiny one on first use), render its config and build the month's
    dataset with the base's tokenizer, the teacher (or the extractor), replay of earlier months and the probe's
    retrieved passages. Raises :class:`~pipelines.training.datasets.DatasetTooSmall` when there is too little
    to train on."""
    base = resolve_base(settings, request.base_model, request.base_source)
    cfg = render_config(
        request.profile, request.domain, {"base_model": str(base.path), "seed": 42, **request.overrides}
    )
    items = load_items(eval_items_path(request.domain))
    spec: DatasetSpec = {
        "domain": request.domain,
        "month": request.month,
        "tokenizer": str(base.path / "tokenizer.json"),
        "eval_texts": [it["question"] + " " + " ".join(it["choices"]) for it in items],
        "max_tokens": int(cfg["sequence_len"]) - 96,
        "watchlist_domains": watchlist_domains(),
        "base": str(base.path),
        # the base's own general text against forgetting; a test profile or random-init base has none worth it
        "rehearsal_share": 0.0 if request.test_profile or base.test_model else settings.rehearsal_share,
    }
    return Prepared(base, build_in_child(settings, spec), items, cfg)


def _production_role(store: ModelStore, settings: Settings, domain: str) -> tuple[Path, Path] | None:
    """(base folder, adapter folder) of the domain's production version, if it has one."""
    prod = store.production(domain)
    if not prod:
        return None
    man = store.manifest(domain, prod)
    base_ref = (man.get("base") or {}).get("name") or man.get("base_model")
    if not base_ref:
        return None
    base = locate_base(settings, str(base_ref), f"production {domain}/{prod} base")
    return base.path, store.version_dir(domain, prod) / "adapter"


class StepClock:
    """Wall time of each named step."""

    def __init__(self, say: Log) -> None:
        self.timings: dict[str, float] = {}
        self.say = say

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - t0, 2)
        self.say(f"step {name}: {self.timings[name]:.1f}s")


@dataclass(frozen=True)
class RunPlan:
    """What a run will make: its request, what it is built on, the final config, folder and version."""

    request: RetrainRequest
    prepared: Prepared
    cfg: dict[str, Any]
    run_dir: Path
    version: str  # same month, dataset and config: same version

    @property
    def domain(self) -> str:
        return self.request.domain

    @property
    def profile(self) -> str:
        return self.request.profile

    @property
    def base(self) -> BaseModel:
        return self.prepared.base

    @property
    def card(self) -> DatasetCard:
        return self.prepared.card


@dataclass(frozen=True)
class Candidate:
    """A trained, merged and merge-checked candidate."""

    result: TrainResult
    merged: Path
    merge_report: dict[str, Any]


@dataclass(frozen=True)
class Verdict:
    """A candidate's evaluation against base (and production) and the gate's decision on it."""

    evaluation: Evaluation
    decision: GateDecision
    test_model: bool


def plan_run(settings: Settings, request: RetrainRequest, prepared: Prepared) -> RunPlan:
    """Lay the dataset files, the step cap and the request's overrides over the prepared config; returns the
    plan (folder and version follow from the config)."""
    run: dict[str, Any] = dict(request.overrides)
    if request.max_steps:
        run["max_steps"] = request.max_steps
    card = prepared.card
    datasets: list[dict[str, Any]] = [
        {
            "path": card["files"]["train"],
            "type": "chat_template",
            "ds_type": "json",
            "field_messages": "messages",
            "roles_to_train": ["assistant"],
            "train_on_eos": "turn",
        }
    ]
    text_rows = Path(card["files"]["train_text"])
    if text_rows.is_file() and text_rows.stat().st_size:  # the documents' own text as completion targets
        datasets.append(
            {"path": card["files"]["train_text"], "type": "completion", "ds_type": "json", "field": "text"}
        )
    cfg = deep_merge(prepared.cfg, {**run, "datasets": datasets})
    month = request.month
    return RunPlan(
        request=request,
        prepared=prepared,
        cfg=cfg,
        run_dir=run_dir_for(settings.runs_dir, request.domain, month, card["sha256"], cfg),
        version=f"{month}.{card['sha256'][:6]}{config_hash(cfg)[:4]}",
    )


def reuse_existing(settings: Settings, store: ModelStore, plan: RunPlan) -> RetrainSummary | None:
    """When the plan's version exists already (same month, dataset and config), the summary of that version
    (finishing a publish a crash interrupted); None when it has yet to be made."""
    done = store.version_dir(plan.domain, plan.version) / "manifest.json"
    if not done.is_file():
        return None
    published = json.loads(done.read_text())
    gate_reason = (published.get("gate") or {}).get("reason", "")
    if store.interrupted_promotion(plan.domain, plan.version):  # a crash between publish and the pointer move
        store.promote(
            plan.domain,
            plan.version,
            actor=_actor(plan.request.origin),
            allow_test_models=settings.allow_test_models,
            reason=f"{gate_reason} (completing an interrupted publish)",
        )
        from pipelines.publishing.serving import hand_off

        hand_off(settings, plan.domain)
    return {
        "domain": plan.domain,
        "version": plan.version,
        "published": store.production(plan.domain) == plan.version,
        "reason": f"unchanged: {plan.version} was already made from this dataset and config "
        f"({gate_reason or 'no gate record'})"
        + ("; awaiting approval" if store.approval(plan.domain, plan.version) == "pending" else ""),
        "metrics": {"candidate": published.get("metrics", {})},
        "run_dir": str(plan.run_dir),
    }


def train_candidate(settings: Settings, plan: RunPlan, *, gpu: int | None, clock: StepClock) -> Candidate:
    """Validate the config, train (resuming), check the adapter moved, keep ``cbnano.adapter_scale`` of its
    delta (below 1: a scaled copy in ``<run>/adapter``, which is what is merged, evaluated and published),
    merge and check the merge; axolotl's output goes to the clock's log."""
    with clock.step("validate"):
        problems = validate_in_train_env(
            [write_config(plan.cfg, plan.run_dir / "config.rendered.yml")], settings.train_python
        )
    if problems:
        raise ValueError("config rejected before training: " + "; ".join(problems))
    with clock.step("train"):
        result = train(plan.cfg, plan.run_dir, settings.train_python, gpu=gpu, log=clock.say)
    if not adapter_changed(result.adapter_dir):
        raise RuntimeError(f"training left the adapter unchanged in {result.adapter_dir}")
    scale = adapter_scale(plan.cfg)
    if scale < 1.0:  # the candidate keeps this share of the trained delta; axolotl's out/ stays as trained
        with clock.step("interpolate"):
            moved = interpolate(result.adapter_dir, plan.run_dir / "adapter", scale, settings.train_python)
        clock.say(f"adapter: {scale:g} of the trained delta kept ({moved['scaled']} B matrices scaled)")
        result = replace(
            result, adapter_dir=plan.run_dir / "adapter", stats={**result.stats, "adapter_scale": scale}
        )
    with clock.step("merge"):
        merged = merge(
            plan.run_dir, settings.train_python, gpu=gpu, log=clock.say, adapter_dir=result.adapter_dir
        )
    with clock.step("merge_check"):
        report = check_merge(plan.base.path, result.adapter_dir, merged, settings.train_python, gpu=gpu)
    return Candidate(result, merged, report)


def judge_candidate(
    settings: Settings,
    store: ModelStore,
    plan: RunPlan,
    candidate: Candidate,
    *,
    gpu: int | None,
    clock: StepClock,
) -> Verdict:
    """Evaluate base, production (if any) and the candidate per item, and let the gate decide; a test model's
    pass is overruled unless ``CBNANO_ALLOW_TEST_MODELS``."""
    roles: dict[str, tuple[Path, Path | None]] = {"base": (plan.base.path, None)}
    prod = _production_role(store, settings, plan.domain)
    if prod:
        roles["production"] = prod
    roles["candidate"] = (plan.base.path, candidate.result.adapter_dir)
    with clock.step("evaluate"):
        evaluation = evaluate_roles(
            settings,
            plan.domain,
            roles,
            Path(plan.card["files"]["validation"]),
            bool(plan.cfg.get("load_in_4bit")),
            gpu,
            plan.run_dir / "eval_spec.json",
            probe=Path(plan.card["files"]["probe"]),
            progress=clock.say,
        )
    decision = decide(evaluation["per_item"], min_gain=plan.request.min_gain)
    test_profile = plan.request.test_profile
    test_model = test_profile or plan.base.test_model
    if decision.publish and test_model and not settings.allow_test_models:
        what = f"profile {plan.profile}" if test_profile else f"random-init base {plan.base.name}"
        decision = overrule(
            decision, f"test model ({what}) never becomes production without CBNANO_ALLOW_TEST_MODELS=1"
        )
    for line in decision.lines():
        clock.say(line)
    return Verdict(evaluation, decision, test_model)


def publish_candidate(
    settings: Settings,
    store: ModelStore,
    plan: RunPlan,
    candidate: Candidate,
    verdict: Verdict,
    *,
    clock: StepClock,
) -> RetrainSummary:
    """Write the run's report, register the candidate as a version (production moves only if the gate
    passed), apply retention, tell System A when production moved; returns the run's summary."""
    evaluation, decision = verdict.evaluation, verdict.decision
    result = candidate.result
    origin = plan.request.origin
    # with CBNANO_REQUIRE_APPROVAL a passed candidate is registered and waits for a person (the DAG's approval
    # task, or `cbnano models promote`); production moves only then
    held = decision.publish and settings.require_approval
    moves = decision.publish and not held
    # where and how the evaluation ran (device, dtype, seconds, peak memory, the item and held-out files)
    ran: dict[str, object] = {k: v for k, v in evaluation.items() if k not in ("metrics", "per_item")}
    report: dict[str, Any] = {
        "domain": plan.domain,
        "version": plan.version,
        "base": {"name": plan.base.name, "test_model": plan.base.test_model},
        "profile": plan.profile,
        "metrics": evaluation["metrics"],
        "per_item": evaluation["per_item"],
        "gate": decision.to_dict(),
        # what answering without a model scores: chance, and the longest / shortest choice
        "baselines": {
            "probe": plan.card["probe"]["baselines"],
            "mc": probe_baselines(plan.prepared.items),
        },
        "merge_check": candidate.merge_report,
        "train_losses": result.losses,
        "train_stats": result.stats,
        "dataset": plan.card,
        "origin": origin,
        "evaluation": ran,
        "timings": clock.timings,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json(plan.run_dir / "eval.json", report)  # the run's decision with its numbers, kept with the run
    with clock.step("register"):
        register_candidate(
            store,
            plan.domain,
            plan.version,
            base_name=plan.base.name,
            profile=plan.profile,
            run_dir=plan.run_dir,
            adapter_dir=result.adapter_dir,
            merged=candidate.merged,
            dataset_dir=Path(plan.card["files"]["train"]).parent,
            report={**report, "timings": clock.timings},
            losses=result.losses,
            manifest={
                "base": {"name": plan.base.name},
                "base_model": plan.base.name,
                "profile": plan.profile,
                "test_model": verdict.test_model,
                "dataset_sha256": plan.card["sha256"],
                "config": plan.cfg,
                "metrics": evaluation["metrics"]["candidate"],
                "gate": decision.to_dict(),
                "code_revision": _code_revision(),
                "origin": origin,
                **({"approval": "required"} if held else {}),
            },
            promote=moves,
            actor=_actor(origin),
            allow_test_models=settings.allow_test_models,
        )
        store.apply_retention(plan.domain, keep_last=KEEP_VERSIONS)
    write_json(plan.run_dir / "eval.json", {**report, "timings": clock.timings})
    summary: RetrainSummary = {
        "domain": plan.domain,
        "version": plan.version,
        "published": moves,
        "reason": f"{decision.reason}; awaiting approval" if held else decision.reason,
        "metrics": evaluation["metrics"],
        "run_dir": str(plan.run_dir),
        "timings": clock.timings,
        "train_stats": result.stats,
        "evaluation": ran,
    }
    if moves:  # production moved: tell System A (never undoes the publish; see publishing.serving)
        from pipelines.publishing.serving import hand_off

        summary["system_a"] = hand_off(settings, plan.domain)["state"]
    return summary


def retrain(
    settings: Settings, request: RetrainRequest, *, gpu: int | None = None, log: Log | None = None
) -> RetrainSummary:
    """Run the chain for the request's domain (see module docstring) on the GPU ``gpu`` (None: the CPU);
    returns the summary. The request's ``origin`` (e.g. the Airflow dag and run ids) is recorded in the report
    and the manifest, so the model registry links each version to the run that made it."""
    say = log or (lambda _m: None)
    clock = StepClock(say)
    with clock.step("dataset"):  # DatasetTooSmall goes up: the caller reports "not trained", not a gate
        prepared = prepare_dataset(settings, request)
    card = prepared.card
    say(
        f"dataset: {card['train']} train / {card['validation']} held-out examples "
        f"({card['validation_documents']} documents), sha256 {card['sha256'][:12]}; base {prepared.base.name}"
    )
    plan = plan_run(settings, request, prepared)
    store = ModelStore(settings.model_store)
    reused = reuse_existing(settings, store, plan)
    if reused is not None:
        return reused
    candidate = train_candidate(settings, plan, gpu=gpu, clock=clock)
    verdict = judge_candidate(settings, store, plan, candidate, gpu=gpu, clock=clock)
    summary = publish_candidate(settings, store, plan, candidate, verdict, clock=clock)
    emit_retrain(settings, summary, candidate.result.losses)
    return summary
