"""Plots and pages: pure functions of results. matplotlib is imported on first use."""

__all__: list[str] = []
