# System B's worker image: the Airflow image plus the training environment in /opt/train-venv (axolotl
# 0.19.0 pins a starlette that cannot share Airflow's environment, so training runs as a subprocess with
# this interpreter: CBNANO_TRAIN_PYTHON=/opt/train-venv/bin/python).
#   docker build -f train.Dockerfile -t cbnano/airflow-train:3.3.2 --build-arg BASE=cbnano/airflow:3.3.2 .
ARG BASE=cbnano/airflow:3.3.2
FROM ${BASE}

USER root
RUN python -m venv /opt/train-venv && chown -R airflow:0 /opt/train-venv
USER airflow
COPY --chown=airflow:0 requirements-train.txt /opt/cbnano-src/requirements-train.txt
# torch 2.13.0 from PyPI is the CUDA 12 build that bitsandbytes 0.50 and QLoRA need on the GPUs
RUN /opt/train-venv/bin/pip install --no-cache-dir torch==2.13.0 \
 && /opt/train-venv/bin/pip install --no-cache-dir -r /opt/cbnano-src/requirements-train.txt
ENV CBNANO_TRAIN_PYTHON=/opt/train-venv/bin/python AXOLOTL_DO_NOT_TRACK=1 WANDB_MODE=offline
