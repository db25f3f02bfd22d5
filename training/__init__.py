"""medcot: training (SFT baselines, validated vs unvalidated). See training/README.md."""
from __future__ import annotations

import os
import sys


def import_torch() -> None:
    """Import torch with OpenMP's PASSIVE wait policy, then restore the environment (child processes such
    as a vLLM server keep their own defaults). Idle OpenMP threads then sleep instead of spinning: on a
    busy 2-core machine a SmolLM2 LoRA step took ~4 s of CPU instead of 9-35 s. libgomp reads the variable
    once, when torch loads it, so call this before anything imports torch (transformers, trl, peft); an
    explicit OMP_WAIT_POLICY or an already imported torch is left alone."""
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ:
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        import torch  # noqa: F401
    finally:
        del os.environ["OMP_WAIT_POLICY"]
