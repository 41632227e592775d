"""``python -m benchmarks.probe SWEEPER-ARGS...``: the ``sweeper`` command, with a clock on
every Trainer it builds.

Before sweeper's CLI runs, ``transformers.Trainer.__init__`` is wrapped so that each
Trainer gets one more callback, which appends a JSON line per event (train begin, step
begin/end, evaluation, save, train end) with its wall-clock time to
``$SWEEPER_PROBE_EVENTS``. The benchmark that started the process lines these events up
with the trials' start and end in the study's storage (:mod:`benchmarks.overhead`). The
probe measures any version of sweeper the same way: it changes nothing that sweeper
decides, and costs a file append per step.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

EVENTS_ENV = "SWEEPER_PROBE_EVENTS"
# Where the probe writes {"imported": wall time} once sweeper's CLI is imported.
MARKS_ENV = "SWEEPER_PROBE_MARKS"


def install(path: str) -> None:
    import transformers
    from transformers import TrainerCallback

    handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the process's life

    def emit(event: str, state: Any, **extra: Any) -> None:
        record = {"t": time.time(), "pid": os.getpid(), "event": event, "step": state.global_step}
        handle.write(json.dumps(record | extra) + "\n")
        handle.flush()

    class Clock(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            emit("train_begin", state)

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            emit("step_begin", state)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            emit("step_end", state)

        def on_evaluate(
            self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any
        ) -> None:
            emit("evaluate", state, runtime=float((metrics or {}).get("eval_runtime", 0.0)))

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            emit("save", state)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            emit("train_end", state)

    original = transformers.Trainer.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.add_callback(Clock())

    transformers.Trainer.__init__ = init  # type: ignore[method-assign]


def main() -> int:
    path = os.environ.get(EVENTS_ENV)
    if path:
        install(path)
    from sweeper.launch.cli import main as sweeper_main

    marks = os.environ.get(MARKS_ENV)
    if marks:
        with open(marks, "w", encoding="utf-8") as handle:
            json.dump({"imported": time.time()}, handle)
    return sweeper_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
