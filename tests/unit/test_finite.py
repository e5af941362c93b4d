"""The finiteness check every scored row and price passes: by value for a few, by one
reduction for many, and the same answer both ways."""

from __future__ import annotations

import numpy as np
import pytest

from milkprice.predict.model import FEW, all_finite

BAD = (np.nan, np.inf, -np.inf)


@pytest.mark.parametrize("size", [1, FEW, FEW + 1, 10 * FEW])
def test_finite_values_pass(size: int) -> None:
    assert all_finite(np.arange(size, dtype=np.float64).reshape(-1, 1))


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("size", [1, FEW, FEW + 1, 10 * FEW])
def test_one_value_not_finite_fails_wherever_it_is(size: int, bad: float) -> None:
    for at in {0, size // 2, size - 1}:
        a = np.ones(size)
        a[at] = bad
        assert not all_finite(a)


def test_finite_values_whose_sum_overflows_pass() -> None:
    # many values: the sum is infinite, yet every value is finite
    assert all_finite(np.full(FEW + 1, np.finfo(np.float64).max))
