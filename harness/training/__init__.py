"""Training one run with PyTorch Lightning (Lightning stays in this package): batching, families,
checkpoints and resume, decoding, sampling, scoring, distributed data-parallel, and per-run diagnostics."""
