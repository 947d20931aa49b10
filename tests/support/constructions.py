"""Counting the constructor calls of a class within a test."""

from __future__ import annotations

import pytest


def record_constructions(monkeypatch: pytest.MonkeyPatch, cls: type) -> list[tuple]:
    """The positional arguments of every `cls.__init__` call from now on (the test's monkeypatch undoes the
    recording); the constructor itself still runs."""
    calls: list[tuple] = []
    real_init = cls.__init__

    def recording_init(self, *args, **kwargs) -> None:
        calls.append(args)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", recording_init)
    return calls
