"""Units: compute is priced per 10^15 FLOPs."""

from __future__ import annotations

import pytest

from annealscale.core.units import flops_to_usd, pflops


def test_flops_to_usd_prices_per_pflop():
    assert flops_to_usd(1e15, 500.0) == pytest.approx(500.0)
    assert flops_to_usd(3e12, 500.0) == pytest.approx(1.5)
    assert flops_to_usd(0.0, 500.0) == 0.0


def test_pflops_is_the_unit_prices_use():
    assert pflops(2.5e15) == pytest.approx(2.5)
    assert flops_to_usd(4e15, 1.0) == pytest.approx(pflops(4e15))
