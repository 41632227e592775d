"""How fast a trial runs: the speed levers of ``training``, decided here for the device.

Every lever is a key of the study file's ``training`` section. ``auto`` takes this module's
default for the device the trial runs on (:data:`DEVICE_DEFAULTS`), so a study file that
names none runs well on a CPU and a GPU alike; a number or a switch given in the study
file is used as it is. None of them changes what a trial computes beyond floating-point
order: they change how batches reach the model and how the model is run.

The defaults, and what each was measured at, are in docs/benchmarks/speed.md; a lever
that did not pay off on a device is off there, with its number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sweeper.settings.config import TrainingConfig

# The defaults ``auto`` resolves to, per device. CPU: measured on a 2-core CPU
# (docs/benchmarks/speed.md). GPU: the set-up measured on an H200 before these levers were
# settings (2 loader workers, padding to multiples of 8), plus persistent workers and
# non-blocking copies, which remove work without changing any batch; the GPU benchmark
# (`python -m benchmarks gpu`) measures each one on and off when a GPU is lent.
DEVICE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cpu": {
        # Loader processes share the two cores the model trains on: slower (measured).
        "dataloader_workers": 0,
        # Padding to a multiple only adds tokens: a CPU gains nothing from fewer shapes.
        "pad_to_multiple_of": None,
        "non_blocking": False,  # nothing to copy to
        "eval_batch_size": 32,
    },
    "gpu": {
        "dataloader_workers": 2,
        # Tensor cores want multiples of 8; fewer distinct lengths also means fewer
        # first-time costs per shape in each new process.
        "pad_to_multiple_of": 8,
        "non_blocking": True,
        # Evaluation holds no gradients or optimizer state: a larger batch fits, and
        # changes no metric (rows are scored one by one).
        "eval_batch_size": 128,
    },
}


@dataclass(frozen=True)
class Speed:
    """The levers as a trial uses them, every ``auto`` resolved."""

    device: str
    dataloader_workers: int
    persistent_workers: bool
    pin_memory: bool
    pad_to_multiple_of: int | None
    non_blocking: bool
    eval_batch_size: int
    torch_compile: bool
    tf32: bool

    def training_arguments(self) -> dict[str, Any]:
        """The TrainingArguments these levers set (TF32 is set by :func:`apply_tf32`)."""
        return {
            "dataloader_num_workers": self.dataloader_workers,
            "dataloader_persistent_workers": self.persistent_workers,
            "dataloader_pin_memory": self.pin_memory,
            "per_device_eval_batch_size": self.eval_batch_size,
            "torch_compile": self.torch_compile,
            "accelerator_config": {"non_blocking": self.non_blocking},
            # Never through the Trainer: see apply_tf32.
            "tf32": None,
        }


def _device_name() -> str:
    import torch  # here, not at the top: the model card reads DEVICE_DEFAULTS without torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def resolve_speed(training: TrainingConfig, device: str | None = None) -> Speed:
    """The study's levers on ``device`` ("cpu" or "gpu"; default: this process's)."""
    device = device or _device_name()
    defaults = DEVICE_DEFAULTS[device]

    def pick(key: str) -> Any:
        value = getattr(training, key)
        return defaults[key] if value == "auto" else value

    workers = int(pick("dataloader_workers"))
    on_gpu = device == "gpu"
    return Speed(
        device=device,
        dataloader_workers=workers,
        # Persistent workers only exist where there are workers.
        persistent_workers=bool(training.persistent_workers) and workers > 0,
        # Pinned host memory is what makes a non-blocking copy asynchronous.
        pin_memory=on_gpu,
        pad_to_multiple_of=pick("pad_to_multiple_of"),
        non_blocking=bool(pick("non_blocking")) and on_gpu,
        eval_batch_size=int(pick("eval_batch_size")),
        torch_compile=bool(training.torch_compile),
        tf32=on_gpu and bool(training.tf32) and _tf32_capable(),
    )


def _tf32_capable() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


def apply_tf32(enabled: bool) -> None:
    """TF32 for fp32 matrix products and convolutions, set so that torch's legacy readers
    (``torch.get_float32_matmul_precision()``, ``torch.backends.cuda.matmul.allow_tf32``)
    and its new ones (``torch.backends.*.fp32_precision``) all agree.

    transformers sets TF32 through the new process-wide ``torch.backends.fp32_precision``
    (for ``tf32=True``, and for ``torch_compile`` with bf16 whatever ``tf32`` says); after
    that the legacy readers raise ("mix of the legacy and new APIs"), and code that reads
    them, some ``torch.compile`` paths among them, fails. Here both are set to one value,
    so both read the same, whatever ran before."""
    import torch

    # The new process-wide switch first (every backend's new value), then the legacy ones
    # to the same value: each legacy reader compares the two and raises when they differ.
    torch.backends.fp32_precision = "tf32" if enabled else "ieee"  # type: ignore[attr-defined]
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def tf32_readings() -> dict[str, Any]:
    """TF32 as both of torch's APIs read it (a reader that raises is recorded as such)."""
    import torch

    readers = {
        "get_float32_matmul_precision": torch.get_float32_matmul_precision,
        "cuda.matmul.allow_tf32": lambda: torch.backends.cuda.matmul.allow_tf32,
        "cudnn.allow_tf32": lambda: torch.backends.cudnn.allow_tf32,
        "cuda.matmul.fp32_precision": lambda: torch.backends.cuda.matmul.fp32_precision,
        "cudnn.conv.fp32_precision": lambda: torch.backends.cudnn.conv.fp32_precision,  # type: ignore[attr-defined]
    }
    readings: dict[str, Any] = {}
    for name, read in readers.items():
        try:
            readings[name] = read()
        except RuntimeError as error:
            readings[name] = f"raises: {str(error)[:80]}"
    return readings


def compile_recompile_limit(max_length: int, pad_to_multiple_of: int | None) -> int:
    """How many graphs ``torch.compile`` may build per function: one per padded length a
    batch can have (the shortest review pads to one multiple, the longest to max_length),
    and a few to spare. torch's default (8) would fall back to eager part-way through the
    first epoch of a study whose batches take more lengths than that."""
    multiple = pad_to_multiple_of or 1
    return max(8, math.ceil(max_length / multiple) + 2)


def configure_compile(max_length: int, speed: Speed, cache_dir: str | None) -> None:
    """Before a compiled trial: the recompile limit that fits the study's batch shapes,
    and inductor's cache in ``cache_dir`` (under the study's output_dir), so that later
    trials, of this process and of other workers on the machine, load the compiled
    kernels instead of building them again."""
    import os

    import torch._dynamo
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    limit = compile_recompile_limit(max_length, speed.pad_to_multiple_of)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
    # inductor writes its default into the environment the first time it asks, so a value
    # equal to the default is not the user's: only a folder the user chose is kept.
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if cache_dir and current in (None, os.path.abspath(default_cache_dir())):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.abspath(cache_dir)
