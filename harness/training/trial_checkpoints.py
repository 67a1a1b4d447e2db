"""Checkpoints of a tuning trial, so that the trial run again after an interruption resumes.

An interrupted trial (``kill -9`` of ``harness tune``, SIGINT/SIGTERM) is queued again by the
tuner as a new Optuna trial with the same values, whose ``retry_history`` names the trial it
replaces. Both attempts share one checkpoint folder, keyed by the study, the first trial of
that chain and a hash of the values:
``<output_dir>/checkpoints/tuning/<study>/trial-<first number>-<values hash>/``.
The retry therefore finds the killed attempt's newest verified checkpoint and resumes from it
(the same per-epoch checkpoints, verification and bit-exact resume as a grid run's, see
:mod:`harness.training.resume`). The folder is deleted once the trial ends for good (COMPLETE,
PRUNED or failed without a retry).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.experiment import content_hash
from harness.training.resume import Resumable, RunCheckpoints, discard_checkpoints, run_checkpoints

#: The checkpoint folders of trials, under ``<output_dir>/checkpoints/``.
TUNING_FOLDER = "tuning"


def first_trial_number(trial: Any) -> int:
    """The number of the first trial of ``trial``'s retry chain (its own number when it is no retry)."""
    history = _system_attrs(trial).get("retry_history") or []
    return int(history[0]) if history else int(trial.number)


def _system_attrs(trial: Any) -> dict[str, Any]:
    frozen = getattr(trial, "_cached_frozen_trial", None)  # optuna.Trial: what the storage held when asked
    if frozen is not None:
        return dict(frozen.system_attrs)
    try:
        return dict(trial.storage.get_trial_system_attrs(trial._trial_id))
    except Exception:  # noqa: BLE001 - no way to read them: treat the trial as a first attempt
        return {}


def trial_key(study: str, trial: Any, params: dict[str, Any]) -> str:
    """``tuning/<study>/trial-<first number>-<values hash>``: ``trial``'s folder under ``checkpoints/``."""
    first_number = first_trial_number(trial)
    safe_study = "/".join(re.sub(r"[^A-Za-z0-9._-]+", "_", part) or "_" for part in study.split("/")
                          if part not in ("", ".", ".."))
    return f"{TUNING_FOLDER}/{safe_study or '_'}/trial-{first_number}-{content_hash(params)[:12]}"


def trial_checkpoints(output_dir: Path, key: str, data: Any, *, run_id: str, every_minutes: float | None,
                      say: Callable[[str], None],
                      on_resume: Callable[[Resumable], None] | None = None) -> RunCheckpoints:
    """The checkpoints of the trial ``key`` (shared with the attempts it retries), resuming when one verifies."""
    return run_checkpoints(output_dir, key, run_id, data, every_minutes=every_minutes, fresh=False, say=say,
                           on_resume=on_resume)


def discard_trial_checkpoints(output_dir: Path, key: str) -> None:
    """The trial ended for good (COMPLETE, PRUNED, FAIL without a retry): forget its checkpoints."""
    discard_checkpoints(output_dir, key)


__all__ = ["discard_trial_checkpoints", "first_trial_number", "trial_checkpoints", "trial_key"]
