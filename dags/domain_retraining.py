"""
### domain_retraining

Monthly (1st, 00:00 UTC, for the month that ended) and on demand: for each domain (chemistry, materials,
thermal, catalysis), build the month's chat dataset from the ingested papers and compounds, fine-tune the lab's
base model (`CBNANO_BASE_MODEL`) with axolotl (`CBNANO_TRAIN_PROFILE`, default `gpu_qlora`: QLoRA on System B's
GPUs), merge, check the merge, evaluate base vs current production vs candidate per item on the leased GPU, and
register the candidate as a model-store version. Production moves only when the gate's 95% interval of the
closed-book knowledge gain (the probability the model gives the right value among the probe's choices, on the
month's trained documents, paired per document) clears the minimum gain, answering with retrieved sources is
non-inferior and the forgetting guards (general-text loss, multiple-choice p(correct)) hold. With
`CBNANO_REQUIRE_APPROVAL` a passed candidate waits in `approve_<domain>` (Browse → Required actions) with the
gate's figures: approval moves production, rejection records the reason in the version's history. A domain
with too little data is listed by `report` as "not trained", and the run fails.

`plan` resolves each domain's request once (month, profile, base, bar: `pipelines.training.request`) and fails
the run at once, before any dataset is built, when one cannot run (no usable base model, say); the mapped
tasks, and their retries, train exactly what it resolved. One mapped task
per domain runs on Celery queue `system_b` holding a slot of pool `system_b_gpu` (one slot per GPU), so two
domains train at once and never share a GPU. A domain whose production moved emits its `cbnano://models/<domain>`
Asset. Manual trigger: domains, profile, base model, step cap, minimum gain, month, dry run (datasets only).
Logic lives in `pipelines.training.retrain`; model work runs in `.venv-train` as subprocesses.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task

from cbnano_common import (
    BASE_MODEL,
    DAG_COMMON,
    DOMAINS,
    MIN_GAIN,
    MODEL_ASSETS,
    TRAIN_PROFILE,
    TRAIN_PROFILES,
    dag_settings,
    domains_param,
)


class ModelApproval(ApprovalOperator):
    """Asks a person (Airflow's "Required actions") to approve or reject a domain's passed candidate, with the
    gate's figures as the body; the answer is applied by :func:`pipelines.publishing.approval.settle`: approval
    moves production, rejection records the reason in the version's history (and skips ``announce``)."""

    def __init__(self, *, domain: str, **kwargs) -> None:
        asked = f"ti.xcom_pull(task_ids='request_approval_{domain}')"
        kwargs.pop("params", None)  # the DAG's form: the question has its own (the reason)
        super().__init__(
            task_id=f"approve_{domain}",
            subject="{{ " + asked + "['subject'] }}",
            body="{{ " + asked + "['body'] }}",
            params={
                "reason": Param(
                    "",
                    type="string",
                    title="Reason",
                    description="Recorded in the version's history (needed to reject).",
                    source="task",
                )
            },
            **kwargs,
        )
        self.domain = domain

    def execute_complete(self, context, event):
        from pipelines.publishing.approval import settle

        answer = HITLOperator.execute_complete(self, context=context, event=event)  # the checked answer
        asked = context["ti"].xcom_pull(task_ids=f"request_approval_{self.domain}")
        who = answer.get("responded_by_user") or {}
        settled = settle(
            dag_settings(),
            self.domain,
            asked["version"],
            approved=answer["chosen_options"] == [self.APPROVE],
            actor=f"airflow-user:{who.get('name') or who.get('id') or 'unknown'}",
            reason=str((answer.get("params_input") or {}).get("reason") or ""),
        )
        print(f"{self.domain} {settled['version']}: {settled['outcome']} by {settled['actor']}")
        super().execute_complete(context=context, event=event)  # a rejection skips announce (it raises)
        return dict(settled)


@dag(
    dag_id="domain_retraining",
    schedule=CronDataIntervalTimetable("0 0 1 * *", timezone="UTC"),
    **DAG_COMMON,
    tags=["cbnano", "training"],
    doc_md=__doc__,
    params={
        "domains": domains_param("Domains to retrain."),
        "profile": Param(
            TRAIN_PROFILE,
            type="string",
            enum=TRAIN_PROFILES,
            description="Hardware profile in axolotl_configs/ (default CBNANO_TRAIN_PROFILE; gpu_qlora "
            "on System B; tiny trains a test model that never becomes production).",
        ),
        # empty by default, so that the tiny profile keeps its own test model; the description shows the setting
        "base_model": Param(
            None,
            type=["null", "string"],
            description="Base model: a name under the model store's base/, or a folder. Empty: "
            f"CBNANO_BASE_MODEL (now {BASE_MODEL or 'unset'}); the tiny profile "
            "builds its own test model.",
        ),
        "max_steps": Param(None, type=["null", "integer"], minimum=1, description="Cap on training steps."),
        "min_gain": Param(
            MIN_GAIN,
            type="number",
            description="Closed-book knowledge gain on the trained documents (p(correct) of the right "
            "value among the choices) the 95% interval's lower bound must exceed.",
        ),
        "month": Param(
            None,
            type=["null", "string"],
            pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
            description="Month to train on (YYYY-MM). Empty: the run's data interval, or for a "
            "manual run without one, the last complete month.",
        ),
        "dry_run": Param(False, type="boolean", description="Build the datasets only; no training."),
    },
)
def domain_retraining():
    @task  # bad input is not a transient fault: AirflowFailException skips the retries
    def plan() -> list[dict]:
        """One resolved request per domain (month, profile, base, bar checked and defaulted once, here); fails
        the run before any dataset is built when one cannot run (no usable base, say)."""
        from airflow.sdk.exceptions import AirflowFailException

        from pipelines.training.request import resolve_request

        ctx = get_current_context()
        p = ctx["params"]
        settings = dag_settings()
        try:
            requests = [
                resolve_request(
                    settings,
                    domain,
                    month=p.get("month"),
                    interval_start=ctx.get("data_interval_start"),
                    now=getattr(ctx.get("dag_run"), "run_after", None),  # a manual run: the month before it
                    profile=p.get("profile"),
                    base_model=p.get("base_model"),
                    min_gain=p["min_gain"],
                    max_steps=p.get("max_steps"),
                    origin={"dag_id": ctx["dag"].dag_id, "run_id": ctx["run_id"]},
                )
                for domain in p["domains"]
            ]
        except ValueError as exc:  # RequestError, BaseModelMissing
            raise AirflowFailException(str(exc)) from None
        for r in requests:
            print(f"{r.domain}: month {r.month}, profile {r.profile}, base {r.base_name} ({r.base_source})")
        return [r.to_dict() for r in requests]

    # execution_timeout bounds a fine-tune; the Celery visibility timeout in docker-compose.airflow.yml is
    # set above it (a test checks), so Redis never hands a running fine-tune to a second worker
    @task(
        queue="system_b",
        pool="system_b_gpu",
        retries=1,
        max_active_tis_per_dagrun=2,
        execution_timeout=timedelta(hours=20),
        map_index_template="{{ domain }}",
    )
    def retrain_domain(request: dict) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from pipelines.contracts import not_trained, retrain_result
        from pipelines.training.datasets import DatasetTooSmall
        from pipelines.training.gpus import gpu_lease
        from pipelines.training.request import RetrainRequest
        from pipelines.training.retrain import prepare_dataset, retrain

        req = RetrainRequest.from_dict(request)
        ctx = get_current_context()
        ctx["domain"] = req.domain  # names the mapped task in the UI (map_index_template)
        settings = dag_settings()
        if ctx["params"]["dry_run"]:
            card = prepare_dataset(settings, req).card
            raise AirflowSkipException(
                f"dry run: {req.domain} dataset of {card['train']} + {card['validation']} "
                f"examples at {card['files']['train']}; no training"
            )
        with gpu_lease(settings.gpus) as gpu:
            try:
                summary = retrain(settings, req, gpu=gpu, log=print)
            except DatasetTooSmall as exc:  # nothing trained: listed by report, which then fails the run
                print(f"{req.domain}: not trained: {exc}")
                return not_trained(req.domain, str(exc))
        print(f"{req.domain}: {summary['reason']}")
        return retrain_result(summary)

    results = retrain_domain.expand(request=plan())

    @task
    def report(summaries: list) -> list[str]:
        """A leaf with the default trigger rule: the run fails when any domain (or plan) failed, or when a
        domain could not be trained (its reason listed first)."""
        from airflow.sdk.exceptions import AirflowFailException

        from pipelines.contracts import retrain_report

        lines, untrained = retrain_report(summaries)
        for line in lines:
            print(line)
        if untrained:
            raise AirflowFailException("; ".join(untrained))
        return lines

    report(results)

    for domain in DOMAINS:

        @task(task_id=f"request_approval_{domain}", trigger_rule="all_done")
        def request_approval(summaries: list, _domain: str = domain) -> dict:
            """The approval question for the domain's candidate (skipped when none waits for one)."""
            from airflow.sdk.exceptions import AirflowSkipException

            from pipelines.publishing.approval import approval_request

            mine = [s for s in summaries or [] if s and s["domain"] == _domain]
            asked = approval_request(dag_settings(), _domain, mine[0]["version"] if mine else None)
            if asked is None:
                raise AirflowSkipException(f"no {_domain} candidate waits for approval")
            return dict(asked)

        approve = ModelApproval(domain=domain)

        @task(task_id=f"announce_{domain}", outlets=[MODEL_ASSETS[domain]], trigger_rule="all_done")
        def announce(summaries: list, _domain: str = domain) -> str:
            from airflow.sdk.exceptions import AirflowSkipException

            approved = get_current_context()["ti"].xcom_pull(task_ids=f"approve_{_domain}")
            if isinstance(approved, dict) and approved.get("outcome") == "approved":
                return approved["version"]
            mine = [s for s in summaries or [] if s and s["domain"] == _domain and s["published"]]
            if not mine:
                raise AirflowSkipException(f"production of {_domain} did not move this run")
            return mine[0]["version"]

        request_approval(results) >> approve >> announce(results)


domain_retraining_dag = domain_retraining()
