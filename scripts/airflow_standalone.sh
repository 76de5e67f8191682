#!/usr/bin/env bash
# `make airflow`: Airflow 3 standalone (SQLite, LocalExecutor) with this project's dags/ and plugins/,
# its pools, and the CBNANO_* settings. On a machine without internet (these dev machines) the arXiv
# endpoints default to a local replay server of include/samples, so UI-triggered runs work offline.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$ROOT/.venv/bin:$PATH"   # standalone starts its components as `airflow ...` through PATH
export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/var/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$ROOT/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__API__PORT="${AIRFLOW_PORT:-8080}"
# task processes talk to the API server through the execution API: keep its URL on the same port
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://localhost:${AIRFLOW__API__PORT}/execution/"
export CBNANO_HOME="${CBNANO_HOME:-$ROOT/var}"
mkdir -p "$AIRFLOW_HOME"

airflow db migrate >/dev/null
airflow pools import "$ROOT/include/airflow/pools.json" >/dev/null

if [ -z "${CBNANO_ARXIV_API_URL:-}" ]; then
  port="${REPLAY_PORT:-8765}"
  cbnano replay --corpus "$ROOT/include/samples/arxiv" --pubchem-dir "$ROOT/include/samples/pubchem" \
    --port "$port" >/dev/null 2>&1 &
  replay_pid=$!
  trap 'kill $replay_pid 2>/dev/null || true' EXIT
  export CBNANO_ARXIV_API_URL="http://127.0.0.1:$port/api/query" CBNANO_ARXIV_DELAY_S=0
  export CBNANO_PUBCHEM_URL="${CBNANO_PUBCHEM_URL:-http://127.0.0.1:$port/rest/pug}"
  echo "arXiv and PubChem endpoints: local replay of include/samples at http://127.0.0.1:$port (set CBNANO_ARXIV_API_URL to use the real services)"
fi

cat <<MSG
Airflow UI:  http://localhost:${AIRFLOW__API__PORT}
Login:       user 'admin', password printed below by standalone and kept in
             $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated
Try:         trigger 'literature_ingestion' with window_start=2026-11-23, window_end=2026-11-27
MSG
airflow standalone
