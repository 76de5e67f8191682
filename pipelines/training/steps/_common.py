"""What every training-environment step shares: the device it may use and how it answers."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from pipelines.trainenv import PROGRESS


class StepError(SystemExit):
    """A step refuses: one line on stderr, exit status 2."""

    def __init__(self, message: str) -> None:
        print(f"error: {message}", file=sys.stderr)
        super().__init__(2)


def pick_device() -> str:
    """``"cuda"`` when the runner leased a GPU (``CUDA_VISIBLE_DEVICES`` names one), else ``"cpu"``.

    A leased GPU that torch cannot see is an error, not a silent fall-back to the CPU: an 8B model would
    take hours there, and the pool slot would be held for nothing.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not visible:
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        raise StepError(
            f"CUDA_VISIBLE_DEVICES={visible} (a leased GPU) but torch {torch.__version__} sees no CUDA device"
        )
    return "cuda"


def progress(message: str) -> None:
    """Tell the caller how far the step has got (one stderr line; the result stays on stdout)."""
    print(PROGRESS + message, file=sys.stderr, flush=True)


def answer(payload: Any) -> None:
    """Print the step's result as the last line of stdout."""
    print(json.dumps(payload), flush=True)
