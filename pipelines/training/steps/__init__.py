"""Programs that run in the training environment (``.venv-train``: torch, transformers, peft, axolotl).

Airflow's processes never import torch or axolotl; each model-touching step is a module here with a ``main()``,
started by :func:`pipelines.trainenv.run_step` as ``python -m pipelines.training.steps.<name>``
with that environment's interpreter, one GPU (``CUDA_VISIBLE_DEVICES``) or none, and its answer as the last
line of stdout (JSON). Each can be run by hand the same way, e.g.::

    .venv-train/bin/python -m pipelines.training.steps.evaluate --spec var/runs/<run>/eval_spec.json

* ``evaluate``      — score base / production / candidate per item (``pipelines.evaluation.scoring``)
* ``check_merge``   — the merged weights equal base + scale · B·A, tensor by tensor, on the leased device
* ``validate_config`` — axolotl's own schema and validation over rendered configs
* ``import_base``   — SmolLM2-135M-Instruct from its GGUF to a safetensors base with the right eos/pad
* ``build_base``    — a random-init model of a given shape (tiny, 1.7B, 8B) with a given tokenizer
"""
