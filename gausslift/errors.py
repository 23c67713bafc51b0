"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""

from __future__ import annotations

from pathlib import Path


class GaussliftError(Exception):
    """Base class for errors that are the user's input or environment, not a bug."""


class InputError(GaussliftError):
    """Bad input: names the file and what is wrong with it."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


class MissingWeightsError(GaussliftError):
    """Pretrained weights that must come from a user-given path are absent."""
