"""``harness tune``: equal-budget Optuna studies per (cell, task), their trials and their report."""
