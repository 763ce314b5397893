"""select: the most compressed level within a validation-accuracy drop of the dense model, chosen on
validation only, with clear refusals when there is nothing to choose from.
"""

import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slimtrain.cli import EXIT_BAD_INPUT, EXIT_OK, main
from slimtrain.errors import BadInputError
from slimtrain.experiments.selecting import select

from .results_fixture import row, write_compare

LEVELS = (0.0, 0.5, 0.8, 0.9, 0.95)
accuracies = st.floats(0.1, 1.0, allow_nan=False)


def _rows(val, test, dense_val=(0.9, 0.92)):
    """A dense recipe (two seeds) and an SFW recipe whose per-level accuracies are ``val`` / ``test``."""
    rows = []
    for seed, reference in enumerate(dense_val):
        rows += [
            row("dense", "dense", seed, lv, reference, 0.9, val_acc_dense=reference) for lv in (0.0, 0.5)
        ]
        rows += [
            row("sfw", "sfw", seed, lv, v[seed], t[seed]) for lv, v, t in zip(LEVELS, val, test, strict=True)
        ]
    return rows


@given(
    val=st.lists(st.tuples(accuracies, accuracies), min_size=len(LEVELS), max_size=len(LEVELS)),
    test=st.lists(st.tuples(accuracies, accuracies), min_size=len(LEVELS), max_size=len(LEVELS)),
    drop=st.floats(0.0, 0.5),
)
def test_choice_is_the_most_compressed_level_within_the_drop(tmp_path_factory, val, test, drop):
    """The chosen level is within the drop (mean over seeds, validation), and no more compressed level is."""
    folder = write_compare(tmp_path_factory.mktemp("cmp"), _rows(val, test))
    choice = {c.recipe: c for c in select(folder, drop)}["sfw"]
    floor = statistics.fmean((0.9, 0.92)) - drop
    within = [lv for lv, v in zip(LEVELS, val, strict=True) if statistics.fmean(v) >= floor - 1e-12]
    if not within:
        assert choice.row is None and choice.level is None
        return
    assert choice.row["requested_level"] == max(within)
    assert choice.level == f"sparsity {max(within):g}"
    assert choice.drop <= drop + 1e-12
    assert choice.row["acc_compressed_no_ft"] == pytest.approx(
        statistics.fmean(test[LEVELS.index(max(within))])
    )


def test_test_accuracy_never_changes_the_choice(tmp_path):
    """Swapping the test accuracies between levels leaves the chosen level as it was."""
    val = [(0.9, 0.9), (0.9, 0.9), (0.89, 0.9), (0.8, 0.8), (0.5, 0.5)]
    high, low = [(0.99, 0.99)] * 5, [(0.1, 0.1)] * 5
    first = select(write_compare(tmp_path / "a", _rows(val, high)), 0.02)
    second = select(write_compare(tmp_path / "b", _rows(val, low)), 0.02)
    assert [c.level for c in first] == [c.level for c in second] == ["sparsity 0.5", "sparsity 0.8"]


def test_without_a_dense_recipe_each_run_is_measured_from_its_own_uncompressed_model(tmp_path):
    """One SFW run: its trained model before compression is the reference (marked as not a dense recipe)."""
    rows = [
        row("sfw", "sfw", 0, lv, v, v, val_acc_dense=0.95)
        for lv, v in ((0.0, 0.95), (0.5, 0.945), (0.9, 0.7))
    ]
    (choice,) = select(write_compare(tmp_path, rows), 0.01)
    assert choice.level == "sparsity 0.5" and not choice.reference.dense
    assert choice.reference_val == 0.95


def test_a_level_set_by_training_is_named_by_its_option(tmp_path):
    """SWD's levels are its targets: chosen and named as such, measured from the dense recipe."""
    rows = [row("dense", "dense", 0, 0.0, 0.9, 0.9)]
    rows += [
        row("swd", "swd", 0, t, v, v, structure="native", option="target")
        for t, v in ((0.9, 0.895), (0.95, 0.85))
    ]
    choices = {c.recipe: c for c in select(write_compare(tmp_path, rows), 0.01)}
    assert choices["swd"].level == "target 0.9"


@pytest.mark.parametrize(
    ("rows", "reference", "message"),
    [
        ([row("a", "dense", 0, 0.0, 0.9, 0.9), row("b", "dense", 0, 0.0, 0.9, 0.9)], None, "several dense"),
        ([row("s", "swd", 0, 0.9, 0.9, 0.9, structure="native", option="target")], None, "no dense model"),
        ([row("d", "dense", 0, 0.0, 0.9, 0.9)], "nope", "no recipe 'nope'"),
        (
            [
                row("d", "dense", 0, 0.0, 0.9, 0.9),
                row("s", "swd", 0, 0.9, 0.9, 0.9, structure="native", option="target"),
            ],
            "s",
            "cannot be the dense reference",
        ),
        (
            [row("d", "dense", 0, 0.0, float("nan"), 0.9, val_acc_dense=float("nan"))],
            None,
            "recipe 'd' .* has no validation accuracy",
        ),
        (
            [
                row("d", "dense", 0, 0.0, 0.9, 0.9),
                row("s", "swd", 0, 0.9, float("nan"), 0.9, structure="native", option="target"),
            ],
            None,
            "recipe 's' .* has no validation accuracy",
        ),
    ],
    ids=[
        "two-dense",
        "only-during-training",
        "unknown-reference",
        "compressed-reference",
        "no-validation-split",
        "no-validation-split-compressed",
    ],
)
def test_refusals_name_the_problem(tmp_path, rows, reference, message):
    with pytest.raises(BadInputError, match=message):
        select(write_compare(tmp_path, rows), 0.01, reference)


def test_rows_without_the_uncompressed_validation_accuracy_ask_for_a_new_sweep(tmp_path):
    old = row("d", "dense", 0, 0.0, 0.9, 0.9)
    del old["val_acc_dense"]
    with pytest.raises(BadInputError, match="sweep or compare again"):
        select(write_compare(tmp_path, [old]), 0.01)


def test_cli_select_prints_the_choice_and_exits_2_without_results(tmp_path, capsys):
    """Exit 0 with the chosen level and its test accuracy; exit 2, one line, for a folder without sweeps."""
    rows = _rows([(0.9, 0.91), (0.9, 0.9), (0.8, 0.8), (0.5, 0.5), (0.4, 0.4)], [(0.88, 0.87)] * 5)
    assert main(["select", str(write_compare(tmp_path / "cmp", rows)), "--max-drop", "0.02"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "sparsity 0.5" in out and "0.8750" in out
    (tmp_path / "empty").mkdir()
    for folder in ("empty", "missing"):
        assert main(["select", str(tmp_path / folder)]) == EXIT_BAD_INPUT
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and folder in err[0]
    assert main(["select", str(tmp_path / "cmp"), "--max-drop", "-0.1"]) == EXIT_BAD_INPUT
    assert "--max-drop" in capsys.readouterr().err
