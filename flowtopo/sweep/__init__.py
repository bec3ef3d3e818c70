"""Sweeps: YAML spec, Optuna define-by-run space, Ray Tune trials recorded in MLflow."""

from flowtopo.sweep.spec import SearchSpec, SweepSpec

__all__ = ["SearchSpec", "SweepSpec"]
