"""Running a grid: the runner, its executors (local, Ray), the run ledger, storage and MLflow tracking."""
