"""The oracle test of `test_samplers.py` on a finer, odd grid (33 points): the same data law in
function space, so every sampler must reproduce it at this resolution too (same tolerances)."""

import pytest
from test_samplers import SAMPLERS, check_gaussian_law


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_reproduces_gaussian_law_on_finer_grid(name):
    check_gaussian_law(name, 33)
