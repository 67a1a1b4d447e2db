"""The tuning report's trial table: min, quartiles and max over the complete trials that hold a budget slot."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState, create_trial

from harness.tuning.report import _Study, _trial_table


def test_the_quartiles_are_over_the_complete_trials_only() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize")  # in memory
    study.set_user_attr("trials", 7)
    for value in (8.0, 1.0, 4.0, 2.0):
        study.add_trial(create_trial(value=value, params={}, distributions={}, user_attrs={"epochs": 3}))
    study.add_trial(create_trial(state=TrialState.PRUNED, params={}, distributions={}, user_attrs={"epochs": 1},
                                 intermediate_values={0: 100.0}))
    study.add_trial(create_trial(state=TrialState.FAIL, params={}, distributions={}))
    # A surplus trial (budget already filled by other workers) holds no slot and is not counted.
    study.add_trial(create_trial(state=TrialState.FAIL, params={}, distributions={}, user_attrs={"surplus": True}))
    table = _trial_table([_Study("gru", study, study.get_trials())])
    assert table.header[-5:] == ("min", "25%", "median", "75%", "max")
    (row,) = table.rows
    # Linear interpolation between order statistics of 1, 2, 4, 8: positions 0.75, 1.5, 2.25.
    assert row[-5:] == ("1", "1.75", "3", "5", "8")
    assert row[2:7] == ("4", "1", "1", "0", "13")  # complete, pruned, failed, running, epochs
    assert row[7] == "1"  # best, minimising
