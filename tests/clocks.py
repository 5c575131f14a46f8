"""A fake monotonic clock for bakes and synthetic traffic: time moves only when the code under test sleeps."""

from __future__ import annotations

from typing import Callable


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []
        self.on_sleep: list[Callable[[float], None]] = []  # callbacks: things that "happen" at a time

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(0.0, seconds)
        for hook in list(self.on_sleep):
            hook(self.now)
