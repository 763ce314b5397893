"""The declared status of every (model, feature) cell of the conformance matrix, and its rendering as
docs/compatibility.md (``python -m tests.conformance.table > docs/compatibility.md``).

A cell is ``EXACT`` unless listed in ``REFUSED``. A refusal names its reason (for the page) and a regular
expression its error message must match; every refusal falls in one of ``REFUSAL_KINDS``, the cases the
library refuses on purpose. ``MUST_BE_EXACT`` features may not be refused on any model.
"""

from __future__ import annotations

from dataclasses import dataclass

from .features import FEATURES
from .zoo import CASES

EXACT = "exact"


@dataclass(frozen=True)
class Refused:
    """A declared refusal: its kind (one of ``REFUSAL_KINDS``) and a regex of the error message."""

    kind: str
    match: str


REFUSAL_KINDS = {
    "tied": "the layer's weight is tied to another module's: replacing it would untie them",
    "channel flow": "channels pass through an operation the dependency graph cannot follow (LayerNorm over "
    "channels, attention reshapes, recurrent layers, grouped convolutions that are not depthwise)",
    "parametrized": "a parametrized weight (weight_norm, spectral_norm, torch.nn.utils.parametrize)",
    "no gate": "structured SWD gates the coupled channel groups that hold a BatchNorm: the model has none, "
    "or too many parameters outside them to meet the target",
    "nothing to replace": "the model has no layer the operation applies to (no convolution for Tucker "
    "factorization or filter pruning, no linear layer for CSR storage); the message lists the layers left "
    "out and why",
}

MUST_BE_EXACT = ("sfw_unstructured", "magnitude_export", "save_load", "metrics")

_TIED = Refused("tied", r"would untie")
_FLOW = Refused("channel flow", r"refused|cannot follow|not depthwise")
_NO_GATE = Refused("no gate", r"structured SWD|gate")

_NOTHING = Refused("nothing to replace", r"nothing to replace|no conv layer")

REFUSED: dict[tuple[str, str], Refused] = {
    **{
        (model, "swd_structured"): _NO_GATE
        for model in (
            "hf_convnext",
            "hf_vit",
            "hf_bert",
            "hf_gpt2",
            "tied_transformer",
            "lstm",
            "gru",
            "conv_transpose",
            "weight_norm",
        )
    },
    ("grouped_conv", "swd_structured"): _FLOW,
    **{
        (model, feature): _TIED
        for model in ("hf_gpt2", "tied_transformer")
        for feature in ("tdlrt", "dlrt", "fixed_rank", "svd_export", "csr")
    },
    **{
        (model, "filter_export"): _FLOW
        for model in ("hf_convnext", "hf_vit", "hf_bert", "hf_gpt2", "lstm", "gru", "grouped_conv")
    },
    ("tied_transformer", "filter_export"): _NOTHING,
    ("weight_norm", "filter_export"): Refused("parametrized", r"parametriz"),
    **{
        (model, "tucker_export"): _NOTHING
        for model in ("hf_bert", "hf_gpt2", "tied_transformer", "lstm", "gru", "conv1d", "same_pad_conv")
    },
    ("conv_transpose", "csr"): _NOTHING,
}


def declared(model: str, feature: str) -> str | Refused:
    """The declared status of a cell."""
    return REFUSED.get((model, feature), EXACT)


ONNX_SOURCES = ("filter_export", "svd_export", "tucker_export", "magnitude_export")
"""The export each model's ONNX check starts from: the first of these that is exact on it."""


def onnx_source(model: str) -> str:
    return next(f for f in ONNX_SOURCES if declared(model, f) == EXACT)


def render() -> str:
    """docs/compatibility.md: the table, one row per model, one column per feature."""
    kinds = list(REFUSAL_KINDS)
    lines = [
        "# Compatibility: models slimtrain was not written for",
        "",
        "Every public function that takes a model works exactly on any `torch.nn.Module`, or refuses it",
        "at the call with an `UnsupportedModelError` (exit status 2 on the command line) naming the",
        "module path, its type and what to do. This page is the conformance suite's table",
        "(`tests/conformance/`), checked against it by the test suite: Hugging Face `transformers` models",
        "built from small configs with random weights, and `torch.nn` built-ins, each called as its users",
        "call it (`pixel_values`, `input_ids` and `attention_mask`, or a tensor) and returning what it",
        "returns (a `ModelOutput` too).",
        "",
        "**✓** means exact: an exported model's outputs equal the compressed model's, a reloaded model's",
        "equal the exported one's, tied weights stay one tensor, constraints hold after training steps,",
        "factorizations at full rank give the original outputs, and counts equal the model's hand counts.",
        "Layers an operator cannot replace (a subclass with its own `forward`, a layer whose parent reads",
        "its weight, a grouped convolution in a Tucker factorization) are left as they are and named in a",
        "warning. A number marks a refusal; the numbers are explained below the table.",
        "",
    ]
    features = [*FEATURES, "onnx"]
    lines.append("| model | " + " | ".join(f"`{f}`" for f in features) + " |")
    lines.append("|---|" + "---|" * len(features))
    for name, case in CASES.items():
        cells = []
        for feature in features:
            status = EXACT if feature == "onnx" else declared(name, feature)
            cells.append("✓" if status == EXACT else f"({kinds.index(status.kind) + 1})")
        lines.append(f"| `{name}`: {case.description} | " + " | ".join(cells) + " |")
    lines += ["", "Refusals:", ""]
    lines += [f"{i}. **{kind}**: {text}." for i, (kind, text) in enumerate(REFUSAL_KINDS.items(), 1)]
    lines += [
        "",
        "The features: `sfw_*`, Stochastic Frank-Wolfe training steps in each constraint mode; `swd_*`,",
        "Selective Weight Decay steps and its final pruning; `tdlrt`, `dlrt`, `fixed_rank`, conversion to",
        "factorized layers, training steps, then export, save and load; `magnitude_export`, `filter_export`,",
        "`svd_export`, `tucker_export`, compression then export; `csr`, sparse linear layers; `save_load`,",
        "`save_exported` then `slimtrain.load`; `metrics`, parameter counts and `summarize`; `onnx`, the",
        "model's most transformed export run by onnxruntime.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
