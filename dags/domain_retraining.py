"""
### domain_retraining

Monthly (1st, 00:00 UTC) and on demand: for each domain (chemistry, materials, thermal, catalysis), build the
month's instruction dataset from the ingested papers and compounds, fine-tune the base model with axolotl
(QLoRA on System B's GPUs in the lab; `tiny`/`cpu_lora` on CPU), merge, evaluate base vs candidate vs current
production, and publish to the model store only if the gate passes. One mapped task per domain runs on Celery
queue `system_b` holding a slot of pool `system_b_gpu` (one slot per GPU), so two domains train at once and
never share a GPU. A domain whose model was published emits its `cbnano://models/<domain>` Asset.

Manual trigger: domains, profile, step cap, minimum gain, dry run (dataset only). Logic lives in
`pipelines.training.retrain`; training runs in `.venv-train` as a subprocess.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task

from cbnano_common import DEFAULT_ARGS, DOMAINS, MODEL_ASSETS


@dag(
    dag_id="domain_retraining",
    schedule=CronDataIntervalTimetable("0 0 1 * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["cbnano", "training"],
    doc_md=__doc__,
    params={
        "domains": Param(DOMAINS, type="array", items={"type": "string", "enum": DOMAINS},
                         description="Domains to retrain."),
        "profile": Param("tiny", type="string", enum=["tiny", "cpu_lora", "gpu_qlora"],
                         description="Hardware profile in axolotl_configs/ (gpu_qlora on System B)."),
        "max_steps": Param(None, type=["null", "integer"], minimum=1, description="Cap on training steps."),
        "min_gain": Param(0.02, type="number", description="Gain on mc_accuracy needed to publish."),
        "base_model": Param(None, type=["null", "string"], description="Base model folder (gpu_qlora)."),
        "month": Param(None, type=["null", "string"], pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
                       description="Month to train on (YYYY-MM). Empty: the run's data interval, or for a "
                                   "manual run without one, the last complete month."),
        "dry_run": Param(False, type="boolean", description="Build the datasets only; no training."),
    },
)
def domain_retraining():
    @task
    def plan() -> list[str]:
        return list(get_current_context()["params"]["domains"])

    # execution_timeout bounds a fine-tune; the Celery visibility timeout in docker-compose.airflow.yml is
    # set above it (a test checks), so Redis never hands a running fine-tune to a second worker
    @task(queue="system_b", pool="system_b_gpu", retries=1, max_active_tis_per_dagrun=2,
          execution_timeout=timedelta(hours=20))
    def retrain_domain(domain: str) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from pipelines.settings import get_settings
        from pipelines.training.gpus import gpu_lease
        from pipelines.training.retrain import resolve_month, retrain

        ctx = get_current_context()
        p = ctx["params"]
        month = resolve_month(ctx.get("data_interval_start"), p.get("month"))
        settings = get_settings()
        if p["dry_run"]:
            from pipelines.training.retrain import prepare_dataset

            _, card = prepare_dataset(settings, domain, p["profile"], month, p.get("base_model"))
            raise AirflowSkipException(f"dry run: {domain} dataset of {card['train']} + {card['validation']} "
                                       f"examples at {card['files']['train']}; no training")
        with gpu_lease(settings.gpus) as gpu:
            summary = retrain(settings, domain, p["profile"], month, p["min_gain"], p.get("max_steps"),
                              p.get("base_model"), gpu=gpu, log=print,
                              origin={"dag_id": ctx["dag"].dag_id, "run_id": ctx["run_id"]})
        print(f"{domain}: {summary['reason']}")
        return {k: summary[k] for k in ("domain", "version", "published", "reason", "metrics")}

    results = retrain_domain.expand(domain=plan())

    for domain in DOMAINS:
        @task(task_id=f"announce_{domain}", outlets=[MODEL_ASSETS[domain]], trigger_rule="all_done")
        def announce(summaries: list, _domain: str = domain) -> str:
            from airflow.sdk.exceptions import AirflowSkipException

            mine = [s for s in summaries or [] if s and s["domain"] == _domain and s["published"]]
            if not mine:
                raise AirflowSkipException(f"no new {_domain} model this run")
            return mine[0]["version"]

        announce(results)


domain_retraining_dag = domain_retraining()
