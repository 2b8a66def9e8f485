"""CpuBudget: a process held to a share of one core pauses exactly as long as it overspent."""

from __future__ import annotations

import pytest

from pipeline.cpu_budget import CpuBudget


class Clocks:
    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def budget(self, share: float, burst_s: float = 0.0) -> CpuBudget:
        return CpuBudget(share, burst_s, cpu=lambda: self.cpu, clock=lambda: self.wall)


def test_within_budget_never_pauses() -> None:
    c = Clocks()
    b = c.budget(0.25)
    for _ in range(100):
        c.wall += 0.01
        c.cpu += 0.0025  # exactly a quarter of a core
        assert b.overdraft_s() == pytest.approx(0.0, abs=1e-12)


def test_overspending_pauses_until_the_share_is_back() -> None:
    c = Clocks()
    b = c.budget(0.25)
    c.wall += 0.01
    c.cpu += 0.01  # a whole core for 10 ms: 7.5 ms over a quarter
    pause = b.overdraft_s()
    assert pause == pytest.approx(0.03)  # 7.5 ms of CPU repaid at 0.25 s per wall second
    c.wall += pause
    assert b.overdraft_s() == pytest.approx(0.0, abs=1e-12)
    assert c.cpu / c.wall == pytest.approx(0.25)
    assert b.paused_s == pytest.approx(0.03)


def test_burst_is_credit_for_later_not_unbounded() -> None:
    c = Clocks()
    b = c.budget(0.5, burst_s=0.01)
    c.wall += 10.0  # idle for long: the credit is capped at the burst
    assert b.overdraft_s() == 0.0
    c.cpu += 0.03
    assert b.overdraft_s() == pytest.approx((0.03 - 0.01) / 0.5)


def test_zero_share_is_no_limit() -> None:
    c = Clocks()
    b = c.budget(0.0)
    c.cpu += 5.0
    assert b.overdraft_s() == 0.0
