"""The "leads" rule: a gap beyond two pooled standard errors, never from a single seed."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slimtrain.experiments.significance import leads, pooled_standard_error, verdict

samples = st.lists(st.floats(0.0, 1.0), min_size=2, max_size=6)


def test_pooled_standard_error_by_hand():
    """For [1, 3] and [2, 2, 2]: sqrt(2/2 + 0/3) = 1."""
    assert pooled_standard_error([1, 3], [2, 2, 2]) == pytest.approx(1.0)


def test_clear_gap_leads_and_noisy_gap_ties():
    """A 0.9 gap with SE 0.14 leads; a 0.2 gap with SE 0.51 is a tie."""
    assert verdict([0.9, 1.1], [0.0, 0.2]) == "A leads"
    assert pooled_standard_error([0.0, 1.0], [0.2, 0.4]) == pytest.approx(math.sqrt(0.25 + 0.01))
    assert verdict([0.0, 1.0], [0.2, 0.4]) == "tie"


@given(samples, samples)
def test_verdict_is_antisymmetric(a, b):
    """Swapping the samples swaps the verdict; both cannot lead at once."""
    flipped = {"A leads": "B leads", "B leads": "A leads", "tie": "tie"}
    assert verdict(b, a) == flipped[verdict(a, b)]
    assert not (leads(a, b) and leads(b, a))


def test_single_seed_cannot_lead():
    """One seed has no variance estimate: asking for a verdict is an error, not a silent claim."""
    with pytest.raises(ValueError, match="two seeds"):
        leads([0.9], [0.1, 0.2])
