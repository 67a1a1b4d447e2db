"""The ``tuning`` section: what ``harness tune`` searches, with which sampler and pruner, on what budget."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from harness.experiment.settings import MAX_EPOCHS, SEED_LIMIT, _Strict


class SearchParam(_Strict):
    """One searched setting of ``tuning.search_space``: a float or int range, or a list of choices.

    Which setting it changes is its key (``training.learning_rate``, ``cell.forget_bias``); the key
    and the values are checked against that setting by :mod:`harness.tuning.space`.
    """

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    #: Sample log-uniformly (learning rates, sizes: Greff et al. 2017 search both on a log scale).
    log: bool = False
    #: A grid step within [low, high] (not with log).
    step: float | None = Field(None, gt=0)
    choices: list[str | bool | int | float | None] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> SearchParam:
        if self.type == "categorical":
            if self.choices is None:
                raise ValueError("a categorical entry needs choices: [...]")
            if self.low is not None or self.high is not None or self.step is not None or self.log:
                raise ValueError("a categorical entry takes only choices; low, high, step and log are for float and int")
            if len({repr(c) for c in self.choices}) != len(self.choices):
                raise ValueError(f"choices are listed twice: {self.choices}")
            return self
        if self.choices is not None:
            raise ValueError(f"choices are for categorical entries; a {self.type} entry takes low and high")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} entry needs low and high")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (got {self.low:g})")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined: Optuna samples on a log scale or on a grid")
        if self.type == "int" and not all(float(v).is_integer() for v in (self.low, self.high, self.step or 1)):
            raise ValueError("an int entry needs whole numbers for low, high and step")
        return self


class SamplerSettings(_Strict):
    """How each study proposes configurations."""

    #: tpe (Optuna's default, Bergstra et al. 2011) or random (Greff et al. 2017's random search).
    name: Literal["tpe", "random"] = "tpe"
    #: The same seed for every study: with one worker, a study is reproducible; null: unseeded.
    seed: int | None = Field(0, ge=0, lt=SEED_LIMIT)
    #: tpe only: random trials before the model takes over (Optuna's default is 10).
    startup_trials: int = Field(10, ge=1, le=MAX_EPOCHS)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _own_options(self) -> SamplerSettings:
        if self.name == "random" and "startup_trials" in self.model_fields_set:
            raise ValueError("startup_trials is an option of the tpe sampler, not of random")
        return self


class PrunerSettings(_Strict):
    """When to stop an unpromising trial early, from its per-epoch validation metric."""

    #: none; median (stop a trial whose value at an epoch is worse than the median of earlier
    #: trials at that epoch); successive_halving (asynchronous successive halving, Li et al. 2020).
    name: Literal["none", "median", "successive_halving"] = "median"
    #: median: no trial is pruned until this many trials have completed (Optuna's default is 5).
    startup_trials: int = Field(5, ge=0, le=MAX_EPOCHS)
    #: median: epochs every trial trains before it can be pruned.
    warmup_epochs: int = Field(0, ge=0, le=MAX_EPOCHS)
    #: successive_halving: epochs every trial trains before the first rung (Optuna's min_resource).
    min_epochs: int = Field(1, ge=1, le=MAX_EPOCHS)
    #: successive_halving: 1/reduction_factor of the trials are promoted at each rung.
    reduction_factor: int = Field(3, ge=2, le=1000)

    _OPTIONS: ClassVar[dict[str, frozenset[str]]] = {
        "none": frozenset(), "median": frozenset({"startup_trials", "warmup_epochs"}),
        "successive_halving": frozenset({"min_epochs", "reduction_factor"}),
    }

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _own_options(self) -> PrunerSettings:
        foreign = sorted(self.model_fields_set - {"name"} - self._OPTIONS[self.name])
        if foreign:
            own = ", ".join(sorted(self._OPTIONS[self.name])) or "none"
            raise ValueError(f"{', '.join(foreign)}: not an option of the {self.name} pruner (its options: {own})")
        return self


class TuningSettings(_Strict):
    """``harness tune``: one Optuna study per (cell, task), every study with the same budget.

    The budget is ``trials`` trials of at most ``training.max_epochs`` epochs each (the
    fair-comparison protocol of Greff et al. 2017 and Melis et al. 2017); the best trial's
    configuration is then re-trained over ``seeds`` like a grid run.
    """

    #: Trials per study, counted to a fixed total: a resumed search runs only what is missing.
    trials: int = Field(ge=1, le=MAX_EPOCHS)
    #: Validation metric to optimise (without ``val_``); default: each task's primary metric.
    metric: str | None = None
    #: Needed only when ``metric`` is neither the task's primary metric nor ``loss``.
    direction: Literal["minimize", "maximize"] | None = None
    sampler: SamplerSettings = Field(default_factory=SamplerSettings)
    pruner: PrunerSettings = Field(default_factory=PrunerSettings)
    #: setting → range or choices; keys ``model.<field>``, ``training.<field>``, ``cell.<option>``,
    #: ``task.<option>``. Left out: the harness's default space (learning rate, size, dropout, clipping).
    search_space: dict[str, SearchParam] | None = None
    #: Merge each cell's and task's own ``search_space`` defaults (e.g. the LSTM's forget_bias)
    #: under the entries above.
    plugin_search_space: bool = True
    #: Times a trial whose worker died (kill -9, a lost machine) is run again with the same values;
    #: after that its failure spends its slot. A trial ended by SIGINT/SIGTERM is always run again.
    max_retries: int = Field(3, ge=0, le=100)
