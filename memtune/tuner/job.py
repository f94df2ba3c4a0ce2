"""A whole tuning job in one call: search, compare on the report seeds, write the outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memtune.tuner.config import TuneConfig
from memtune.tuner.loop import Tuner
from memtune.tuner.report import write_outputs


def tune(config: TuneConfig, out: Path | str, *, resume: bool = False, executor: Any = None,
         on_eval: Any = None, plots: bool = True) -> dict[str, Any]:
    """Run a tuning job into ``out`` and return its report (see docs/tuner.md)."""
    tuner = Tuner(config, Path(out), resume=resume, executor=executor, on_eval=on_eval, compare_early=True)
    try:
        tuner.run()
        comparison = tuner.compare(tuner.best())
        return write_outputs(tuner, comparison, plots=plots)
    finally:
        tuner.journal.close()           # and the output directory's lock
