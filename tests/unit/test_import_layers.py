"""The package's imports run downhill: every module sits on a floor, and imports only its own floor or below.

Floors, from the ground up:

0. **ground**: settings, contracts, documents, lake, windows, terms, the prompt, the bridge into the training
   environment and the process-group leader; they import nothing of the platform above them;
1. **clients** of what lies outside: the sources (arXiv, PubChem), the embedder, the vector store, alerts and
   metrics, the model store, the gateway's database and its HTTP client for System A;
2. **the work**: ingestion, search, datasets, training, evaluation, the gate, the hand-off to System A;
3. **services** that combine the work: the search service, `ask`, release, the dataset step, the gateway,
   the reports;
4. **orchestration**: the retraining chain and the steps that run in the training environment;
5. **the command line**.

Every import counts, those inside functions too (they are how a module reaches up without failing at import
time). A module that is not on a floor fails the test: a new module is placed deliberately.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]

FLOORS: dict[int, tuple[str, ...]] = {
    0: (
        "pipelines",
        "pipelines.settings",
        "pipelines.assets",
        "pipelines.contracts",
        "pipelines.documents",
        "pipelines.lake",
        "pipelines.windows",
        "pipelines.terms",
        "pipelines.process_group",
        "pipelines.trainenv",
        "pipelines.replay",
        "pipelines.vllm_standin",
        "pipelines.prompt",
        "pipelines.embedding",
        "pipelines.evaluation",
        "pipelines.gateway",
        "pipelines.ingestion",
        "pipelines.ops",
        "pipelines.publishing",
        "pipelines.retrieval",
        "pipelines.sources",
        "pipelines.training",
        "pipelines.vectorstore",
    ),
    1: (
        "pipelines.sources.http",
        "pipelines.sources.arxiv",
        "pipelines.sources.pubchem",
        "pipelines.sources.mentions",
        "pipelines.embedding.minilm",
        "pipelines.vectorstore.lite_server",
        "pipelines.vectorstore.milvus",
        "pipelines.ops.alerts",
        "pipelines.ops.metrics",
        "pipelines.publishing.model_store",
        "pipelines.ops.traces",
        "pipelines.publishing.bases",
        "pipelines.gateway.upstream",
    ),
    2: (
        "pipelines.ingestion.arxiv",
        "pipelines.ingestion.indexing",
        "pipelines.ingestion.pubchem",
        "pipelines.retrieval.search",
        "pipelines.training.configs",
        "pipelines.training.knowledge",
        "pipelines.training.routing",
        "pipelines.training.datasets",
        "pipelines.training.rehearsal",
        "pipelines.training.tiny",
        "pipelines.training.base_models",
        "pipelines.training.request",
        "pipelines.training.gpus",
        "pipelines.training.runner",
        "pipelines.evaluation.gate",
        "pipelines.evaluation.scoring",
        "pipelines.evaluation.evaluate",
        "pipelines.publishing.serving",
    ),
    3: (
        "pipelines.retrieval.service",
        "pipelines.retrieval.ask",
        "pipelines.retrieval.golden",
        "pipelines.publishing.release",
        "pipelines.publishing.export",
        "pipelines.publishing.approval",
        "pipelines.training.dataset_step",
        "pipelines.gateway.shapes",
        "pipelines.gateway.backends",
        "pipelines.gateway.limits",
        "pipelines.gateway.tools",
        "pipelines.gateway.tracing",
        "pipelines.gateway.context",
        "pipelines.gateway.routes",
        "pipelines.gateway.routes.completions",
        "pipelines.gateway.routes.embeddings",
        "pipelines.gateway.routes.search",
        "pipelines.gateway.routes.feedback",
        "pipelines.gateway.routes.admin",
        "pipelines.gateway.app",
        "pipelines.reports",
    ),
    4: (
        "pipelines.training.retrain",
        "pipelines.training.steps",
        "pipelines.training.steps._common",
        "pipelines.training.steps.build_base",
        "pipelines.training.steps.check_merge",
        "pipelines.training.steps.evaluate",
        "pipelines.training.steps.export_gguf",
        "pipelines.training.steps.generate",
        "pipelines.training.steps.interpolate",
        "pipelines.training.steps.import_base",
        "pipelines.training.steps.validate_config",
    ),
    5: ("pipelines.cli",),
}
FLOOR = {m: f for f, mods in FLOORS.items() for m in mods}


def _modules() -> dict[str, Path]:
    out = {}
    for f in (ROOT / "pipelines").rglob("*.py"):
        name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = f
    return out


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every platform module ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pipelines":
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "pipelines"}
    return {m for m in found if m in known}


MODULES = _modules()
GRAPH = {m: _imports(p, set(MODULES)) - {m} for m, p in MODULES.items()}


def test_every_module_is_on_a_floor():
    assert sorted(set(MODULES) - set(FLOOR)) == [], "place new modules in FLOORS"
    assert sorted(set(FLOOR) - set(MODULES)) == [], "FLOORS names modules that do not exist"


def uphill(graph: dict[str, set[str]], floor: dict[str, int]) -> list[str]:
    return sorted(
        f"{m} (floor {floor[m]}) imports {d} (floor {floor[d]})"
        for m, deps in graph.items()
        for d in deps
        if floor[d] > floor[m] and not d.startswith(m + ".")  # a package may re-export its own modules
    )


def circles(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    found = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                found.append(" -> ".join(path[path.index(d) :] + [d]))
            elif d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return found


def test_no_import_runs_back_up():
    assert uphill(GRAPH, FLOOR) == []


def test_there_is_no_import_circle():
    assert circles(GRAPH) == []


def test_the_checks_see_imports_inside_functions_and_would_fail_on_a_circle_or_an_uphill_import():
    assert "pipelines.trainenv" in GRAPH["pipelines.retrieval.ask"]  # imported inside ask()
    assert "pipelines.publishing.serving" in GRAPH["pipelines.training.retrain"]  # inside a function too
    bad = {**GRAPH, "pipelines.settings": GRAPH["pipelines.settings"] | {"pipelines.cli"}}
    assert uphill(bad, FLOOR) == ["pipelines.settings (floor 0) imports pipelines.cli (floor 5)"]
    assert any("pipelines.settings -> pipelines.cli" in c for c in circles(bad))


# Folders that must not reach into another: the gateway is a top-floor room nothing below imports (only the
# command line starts it); retrieval answers without the training code; evaluation scores with the shared
# prompt, not with retrieval's modules.
NO_REACH = {
    "pipelines.gateway": ("pipelines.",),  # every folder ...
    "pipelines.training": ("pipelines.retrieval.",),
    "pipelines.retrieval": ("pipelines.evaluation.",),
}
NO_REACH_EXCEPT = {"pipelines.gateway": ("pipelines.gateway", "pipelines.cli")}  # ... but its own and the CLI


def back_arrows(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for target, sources in NO_REACH.items():
        allowed = NO_REACH_EXCEPT.get(target, ())
        for m, deps in graph.items():
            if m.startswith(sources) and not m.startswith(allowed):
                out += [f"{m} imports {d}" for d in sorted(deps) if d == target or d.startswith(target + ".")]
    return sorted(out)


def test_no_folder_reaches_back_into_one_that_must_not_know_it():
    assert back_arrows(GRAPH) == []
    bad = {**GRAPH, "pipelines.training.dataset_step": {"pipelines.gateway.app"}}
    assert back_arrows(bad) == ["pipelines.training.dataset_step imports pipelines.gateway.app"]
