"""Backends: what serves wasi-nn calls, behind the contract in ``base.py``."""

__all__: list[str] = []
