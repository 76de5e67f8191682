"""
### serving_handoff

Tells System A (vLLM's OpenAI-compatible server with runtime LoRA) to serve each domain's production adapter
under the domain's name. Runs on every `cbnano://models/<domain>` Asset event (a domain whose production moved
in `domain_retraining`), and by hand (e.g. after `cbnano models promote`/`rollback` while System A was down,
or after System A restarted). Idempotent: an adapter System A already serves from the production path is left
alone. A failure is retried, recorded in the model store (`<domain>/serving.json`, shown on the registry page)
and alerted; it never touches the model store's production pointer.

System A's URL and token come from the Airflow Connection `cbnano_system_a` (host = URL, password = token),
else from `CBNANO_SYSTEM_A_URL` / `CBNANO_SYSTEM_A_TOKEN`. Logic lives in `pipelines.publishing.serving`.
"""

from __future__ import annotations

from airflow.sdk import dag, get_current_context, task

from cbnano_common import DAG_COMMON, MODEL_ASSETS, dag_settings, domains_param


@dag(
    dag_id="serving_handoff",
    schedule=(
        MODEL_ASSETS["chemistry"]
        | MODEL_ASSETS["materials"]
        | MODEL_ASSETS["thermal"]
        | MODEL_ASSETS["catalysis"]
    ),
    **DAG_COMMON,
    tags=["cbnano", "serving"],
    doc_md=__doc__,
    params={
        "domains": domains_param(
            "Domains to hand to System A (an Asset-triggered run takes the domains whose production moved)."
        ),
    },
)
def serving_handoff():
    @task
    def domains() -> list[str]:
        ctx = get_current_context()
        moved = sorted(
            {
                asset.uri.rsplit("/", 1)[-1]
                for asset in (ctx.get("triggering_asset_events") or {})
                if getattr(asset, "uri", "").startswith("cbnano://models/")
            }
        )
        return moved or list(ctx["params"]["domains"])

    @task(retries=5)
    def hand_off(domain: str) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from pipelines.publishing.serving import hand_off as tell_system_a

        settings = dag_settings()
        if not settings.system_a_url:
            raise AirflowFailException(
                "no System A configured: set the cbnano_system_a Connection (host = "
                "vLLM's URL) or CBNANO_SYSTEM_A_URL"
            )
        ti = get_current_context()["ti"]
        # no alert per try: the task's failure callback (cbnano_common.FailureAlert) alerts after the last one
        outcome = tell_system_a(settings, domain, alert=False)
        print(f"{domain}: {outcome}")
        if outcome["state"] == "failed":
            raise RuntimeError(
                f"System A did not take {domain} {outcome['version']} (try {ti.try_number}): "
                f"{outcome['error']}"
            )
        return outcome

    hand_off.expand(domain=domains())


serving_handoff_dag = serving_handoff()
