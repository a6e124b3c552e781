"""runtime/bench/step_timing.py and bandwidth.median_ms on a stand-in for CUDA events (a clock
that a launch advances), so the timing loops' arithmetic and waits are checked without a GPU."""

from __future__ import annotations

import pytest
import torch

from runtime.bench import bandwidth, step_timing


class Clock:
    """The device's clock in ms; each launch adds its duration, each wait is counted."""

    def __init__(self, durations):
        self.now, self.durations, self.waits = 0.0, list(durations), 0

    def launch(self):
        self.now += self.durations.pop(0)

    def event_class(self):
        clock = self

        class Event:
            def __init__(self, enable_timing=False):
                self.at = None

            def record(self):
                self.at = clock.now

            def synchronize(self):
                clock.waits += 1

            def elapsed_time(self, end):
                return end.at - self.at

        return Event


@pytest.fixture
def clock(monkeypatch):
    def make(durations):
        c = Clock(durations)
        monkeypatch.setattr(torch.cuda, "Event", c.event_class())
        return c

    return make


def test_isolated_is_the_median_launch_with_a_wait_after_each(clock):
    c = clock([4.0, 1.0, 3.0, 2.0, 9.0])
    assert step_timing.isolated_ms(c.launch, 5) == 3.0  # no warm-up: every launch is timed
    assert c.waits == 6  # one per launch, then the final wait on the last event


def test_queued_is_the_mean_after_the_warmup(clock):
    c = clock([100.0, 100.0, 1.0, 2.0, 6.0])
    assert step_timing.queued_ms(c.launch, 3, warmup=2) == 3.0
    assert c.waits == 1 and not c.durations


def test_median_ms_waits_once_unless_asked(clock):
    c = clock([50.0, 5.0, 7.0, 6.0])
    assert bandwidth.median_ms(c.launch, 3, warmup=1) == 6.0
    assert c.waits == 1
