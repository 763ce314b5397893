import statistics

import pytest
from benchmarks.bench_tdlrt_fidelity import matched_compression
from hypothesis import given, settings
from hypothesis import strategies as st

accuracies = st.lists(st.floats(50.0, 100.0), min_size=2, max_size=6)


@settings(max_examples=50, deadline=None)
@given(accuracies, accuracies, accuracies, st.floats(0.0, 1.0), st.floats(-30.0, 30.0))
def test_matched_compression_reads_the_recipe_against_the_interpolated_line(a0, a1, acc, w, shift):
    """At a compression rate a fraction ``w`` of the way from the second baseline point to the first, the
    line's accuracy is the same mix of their means; the difference is the recipe's mean minus it; the
    verdict follows the two-standard-error rule. A baseline point itself is not compared.
    """
    acc = [a + shift for a in acc]
    cr0, cr1 = 94.0, 91.0
    values = {
        "fixed @ 0.15": {"acc_compressed_no_ft": a0, "cr_percent_eval_factorized_only": [cr0] * len(a0)},
        "fixed @ 0.2": {"acc_compressed_no_ft": a1, "cr_percent_eval_factorized_only": [cr1] * len(a1)},
        "tdlrt @ 0.2": {
            "acc_compressed_no_ft": acc,
            "cr_percent_eval_factorized_only": [cr1 + w * (cr0 - cr1)],
        },
    }
    out = matched_compression(values, ("fixed @ 0.15", "fixed @ 0.2"))
    assert list(out) == ["tdlrt @ 0.2"]
    row = out["tdlrt @ 0.2"]
    line = w * statistics.mean(a0) + (1 - w) * statistics.mean(a1)
    assert row["line_accuracy_percent"] == pytest.approx(line, abs=0.006)
    assert row["difference"] == pytest.approx(statistics.mean(acc) - line, abs=0.011)
    two_se = (
        2
        * (
            w**2 * statistics.variance(a0) / len(a0)
            + (1 - w) ** 2 * statistics.variance(a1) / len(a1)
            + statistics.variance(acc) / len(acc)
        )
        ** 0.5
    )
    assert row["two_se"] == pytest.approx(two_se, abs=0.006)
    gap = statistics.mean(acc) - line
    expected = "recipe leads" if gap > two_se else "line leads" if -gap > two_se else "tie"
    if abs(abs(gap) - two_se) > 0.01:  # away from the rounding boundary
        assert row["verdict"] == expected
