"""Load generation and benchmarks (run from the repository root: ``python -m load.<script>``)."""
