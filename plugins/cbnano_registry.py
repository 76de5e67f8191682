"""Airflow 3 plugin: the CB Nano pages in the Airflow UI (menu "CB Nano").

* **Model registry** (`/cbnano/`): per domain, the production pointer and every published version with its
  base / production / candidate metrics, evaluation chart, dataset hash and size, and a link to the Airflow
  run that made it; below, the recent retraining gate decisions, refused ones included.
* **Ingestion runs** (`/cbnano/ingestion`): each ingestion run's report (counts, quarantined items and why).

Read-only, served by the API server as a FastAPI sub-application; every route requires a user logged in
through Airflow's own auth manager (the UI's session cookie or a bearer token). The content comes from
`pipelines.reports`, which reads the model store, the training runs and the data lake.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.core_api.security import requires_authenticated
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

# no /docs, /redoc or /openapi.json: FastAPI serves those outside the app's dependencies, i.e. without login
registry_app = FastAPI(
    title="CB Nano model registry",
    dependencies=[Depends(requires_authenticated())],
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)


@registry_app.get("/", response_class=HTMLResponse)
def registry_page() -> str:
    from pipelines.reports import model_registry, render_registry, retrain_decisions
    from pipelines.settings import get_settings

    settings = get_settings()
    return render_registry(model_registry(settings), retrain_decisions(settings), base="./", airflow_base="/")


@registry_app.get("/ingestion", response_class=HTMLResponse)
def ingestion_page() -> str:
    from pipelines.reports import ingestion_runs, render_ingestion
    from pipelines.settings import get_settings

    return render_ingestion(ingestion_runs(get_settings()), base="./")


@registry_app.get("/api/models")
def models_json() -> list[dict[str, Any]]:
    from pipelines.reports import model_registry
    from pipelines.settings import get_settings

    return model_registry(get_settings())


@registry_app.get("/charts/{domain}/{version}")
def chart(domain: str, version: str) -> FileResponse:
    from pipelines.publishing.model_store import ModelStore, ModelStoreError
    from pipelines.settings import get_settings

    try:
        path = ModelStore(get_settings().model_store).version_dir(domain, version) / "eval.png"
    except ModelStoreError as exc:  # a name that is not a domain/version name
        raise HTTPException(status_code=400, detail=str(exc)) from None
    if not path.is_file():
        raise HTTPException(status_code=404, detail=f"no chart for {domain} {version}")
    return FileResponse(path, media_type="image/png")


class CbnanoPlugin(AirflowPlugin):
    name = "cbnano"
    fastapi_apps = [{"app": registry_app, "url_prefix": "/cbnano", "name": "CB Nano registry"}]
    external_views = [
        {
            "name": "Model registry",
            "href": "/cbnano/",
            "destination": "nav",
            "category": "CB Nano",
            "url_route": "cbnano-registry",
        },
        {
            "name": "Ingestion runs",
            "href": "/cbnano/ingestion",
            "destination": "nav",
            "category": "CB Nano",
            "url_route": "cbnano-ingestion",
        },
    ]
