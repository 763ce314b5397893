"""Every conformance model × every feature: the observed status equals the one declared in table.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from slimtrain.errors import SlimtrainError, UnsupportedModelError

from .features import FEATURES, fresh, onnx_roundtrip
from .table import EXACT, MUST_BE_EXACT, REFUSAL_KINDS, REFUSED, Refused, declared, onnx_source, render
from .zoo import CASES

pytest.importorskip("transformers")

_BUILT: dict[str, tuple[torch.nn.Module, object]] = {}


def built(name: str) -> tuple[torch.nn.Module, object]:
    """Each model and its inputs, built once per test session from seed 0."""
    if name not in _BUILT:
        torch.manual_seed(0)
        _BUILT[name] = CASES[name].build(), CASES[name].inputs()
    return _BUILT[name]


@pytest.mark.parametrize("feature", list(FEATURES))
@pytest.mark.parametrize("name", list(CASES))
def test_cell(name, feature, tmp_path):
    model, inputs = built(name)
    expected = declared(name, feature)
    torch.manual_seed(0)
    if expected == EXACT:
        FEATURES[feature](CASES[name], fresh(model), inputs, tmp_path)
        return
    with pytest.raises(UnsupportedModelError) as refusal:
        FEATURES[feature](CASES[name], fresh(model), inputs, tmp_path)
    assert re.search(expected.match, str(refusal.value)), str(refusal.value)


@pytest.mark.parametrize("name", list(CASES))
def test_onnx_of_the_most_transformed_export(name, tmp_path):
    model, inputs = built(name)
    exported = FEATURES[onnx_source(name)](CASES[name], fresh(model), inputs, tmp_path)
    onnx_roundtrip(exported, inputs, tmp_path)


def test_the_table_declares_only_known_cells_and_kinds():
    assert {m for m, _ in REFUSED} <= set(CASES)
    assert {f for _, f in REFUSED} <= set(FEATURES)
    assert all(isinstance(r, Refused) and r.kind in REFUSAL_KINDS for r in REFUSED.values())
    assert not [cell for cell in REFUSED if cell[1] in MUST_BE_EXACT]


def test_refusals_derive_from_the_error_base():
    assert issubclass(UnsupportedModelError, SlimtrainError)


def test_compatibility_page_is_the_rendered_table():
    page = Path(__file__).parents[2] / "docs" / "compatibility.md"
    assert page.read_text(encoding="utf-8") == render(), (
        "docs/compatibility.md is stale: python -m tests.conformance.table > docs/compatibility.md"
    )
