"""Exporting to ONNX and loading a CSR export print no third-party warnings a user cannot act on.

The filters are local (``warnings.catch_warnings`` and a logging filter around slimtrain's own calls), so
warnings of the user's code and slimtrain's own stay visible, and nothing is filtered after the call.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import yaml

from slimtrain.cli import EXIT_OK, main
from slimtrain.compress import export_onnx

TREE = {
    "name": "quiet",
    "data": {"name": "digits"},
    "model": {"name": "mlp", "kwargs": {"widths": [16]}},
    "train": {"epochs": 1, "batch_size": 64, "max_steps": 3, "progress": False, "tensorboard": False},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("quiet")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(TREE))
    assert main(["train", str(recipe), "--run-dir", str(root / "run")]) == EXIT_OK
    return root / "run"


def test_cli_onnx_export_prints_no_warnings(run_dir, tmp_path, capfd):
    out = tmp_path / "onnx"
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(
            [
                "export",
                str(run_dir),
                "--level",
                "0.5",
                "--output",
                str(out),
                "--onnx",
                "--latency-batch-sizes",
            ]
        )
    assert code == EXIT_OK and (out / "model.onnx").is_file()
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []
    printed = capfd.readouterr()
    assert "ONNX:" in printed.out
    # Nothing but slimtrain's own report: no exporter log lines ("torchvision is not installed"), no warnings.
    assert printed.err == ""
    assert "Warning" not in printed.out and "torchvision" not in printed.out


def test_filters_are_local_to_the_export(tmp_path):
    """A warning of the user's own model is still shown, and the filters are gone after the call."""

    class Noisy(torch.nn.Linear):
        def forward(self, x):
            warnings.warn("the user's own warning", UserWarning, stacklevel=2)
            return super().forward(x)

    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(Noisy(4, 2).eval(), torch.randn(2, 4), tmp_path / "noisy.onnx")
    assert "the user's own warning" in [str(w.message) for w in caught]
    assert warnings.filters == before


def test_loading_and_running_a_csr_export_prints_no_warnings(run_dir, tmp_path):
    """In a fresh process (torch's beta warning is issued once per process): load, forward, densify."""
    out = tmp_path / "csr"
    args = ["export", str(run_dir), "--level", "0.9", "--output", str(out), "--csr", "--latency-batch-sizes"]
    assert main(args) == EXIT_OK
    script = textwrap.dedent(
        f"""
        import torch
        import slimtrain
        from slimtrain.compress import densify, to_sparse_linear
        from slimtrain.layers import SparseLinear

        model = slimtrain.load({str(out)!r})
        layers = [m for m in model.modules() if isinstance(m, SparseLinear)]
        assert layers, "the export holds no CSR layer"
        with torch.no_grad():
            model(torch.zeros(3, 1, 8, 8))
        layers[0].weight_csr(), layers[0].dense_weight(), layers[0].to_dense()
        densify(model)
        to_sparse_linear(densify(model))
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
    assert result.stderr == ""
