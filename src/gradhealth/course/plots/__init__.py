"""Figures of the course experiments (activations, initializers, optimizer comparison)."""

__all__: list[str] = []
