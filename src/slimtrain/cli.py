"""The ``slimtrain`` command line: train, sweep, compare, report, export, inspect, demo.

Exit codes: 0 success; 1 the work failed (:class:`slimtrain.errors.WorkFailedError`: training diverged, a
checkpoint or exported model is unusable or corrupted, an export does not reproduce its model, ...); 2 invalid
or unsupported input (:class:`slimtrain.errors.BadInputError`: bad recipe, unknown key, missing file, bad
arguments, a model the command cannot handle).
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
DEMO_OUTPUT = Path("runs/demo")


def _cmd_train(args: argparse.Namespace) -> int:
    from slimtrain.train.config import load_recipe
    from slimtrain.train.trainer import Trainer

    recipe = load_recipe(args.recipe, args.set)
    trainer = Trainer(recipe, args.run_dir)
    results = trainer.fit(resume=args.resume)
    if trainer.world.is_main:
        print(f"run directory: {trainer.run_dir}")
        print(f"val accuracy {results['val_accuracy']:.4f}, test accuracy {results['test_accuracy']:.4f}")
    return EXIT_OK


def _cmd_sweep(args: argparse.Namespace) -> int:
    from slimtrain.experiments.sweeping import sweep

    rows = sweep(
        args.run_dir,
        structure=args.structure,
        levels=args.levels,
        bn_recalibration=args.bn_recalibration or None,
        latency=args.latency,
    )
    print(f"{'level':>7}  {'test acc':>8}  {'sparsity':>8}  {'ratio':>7}")
    for row in rows:
        print(
            f"{row['requested_level']:7.3f}  {row['acc_compressed_no_ft']:8.4f}  "
            f"{row.get('sparsity_prunable', float('nan')):8.4f}  {row.get('compression_ratio_all', 1.0):7.2f}"
        )
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    from slimtrain.experiments.comparison import compare
    from slimtrain.experiments.report import write_report

    compare(
        args.recipes,
        args.output,
        seeds=args.seeds,
        overrides=args.set,
        structure=args.structure,
        latency=args.latency,
    )
    print(f"report: {write_report(args.output)}")
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from slimtrain.experiments.report import write_report

    print(f"report: {write_report(args.directory)}")
    return EXIT_OK


def _level(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"level must be in [0, 1), got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _cmd_export(args: argparse.Namespace) -> int:
    from slimtrain.experiments.exporting import export_run

    result = export_run(
        args.run_dir,
        args.level,
        structure=args.structure,
        output=args.output,
        onnx=args.onnx,
        round_to=args.round_to,
        sparse_linear=args.csr,
        latency_batch_sizes=tuple(args.latency_batch_sizes),
        overwrite=args.overwrite,
    )
    m = result.metrics
    print(f"exported {result.structure} at level {result.level:g}: {result.path}")
    print(
        f"  test accuracy {result.acc_exported:.4f} (compressed model {result.acc_compressed:.4f}); "
        f"max |output difference| {result.max_abs_error:.2g}"
    )
    print(
        f"  parameters {m['params_stored_all']:,} stored, dense model {result.params_dense_reference:,} "
        f"({m['compression_ratio_all']:.2f}x)"
    )
    if "macs_dense" in m:
        print(
            f"  MACs per sample {m['macs_effective']:,.0f} of {m['macs_dense']:,.0f} dense "
            f"(theoretical speed-up {m['theoretical_speedup']:.2f}x)"
        )
    for batch in args.latency_batch_sizes:
        print(
            f"  CPU latency batch {batch}: {result.latency[f'latency_ms_b{batch}']:.3f} ms median "
            f"(measured speed-up {result.latency[f'measured_speedup_b{batch}']:.2f}x)"
        )
    if result.onnx_path is not None:
        print(f"  ONNX: {result.onnx_path} (outputs checked with onnxruntime)")
    return EXIT_OK


def _cmd_inspect(args: argparse.Namespace) -> int:
    import slimtrain
    from slimtrain.compress import read_manifest

    if not args.directory.is_dir():
        raise FileNotFoundError(f"{args.directory} is not a directory")
    model = slimtrain.load(args.directory)
    manifest = read_manifest(args.directory)
    base = manifest["base_model"]
    params = sum(t.numel() for t in model.state_dict().values())
    print(f"{args.directory}: {base.get('registry_name', base.get('factory'))} {base['kwargs']}")
    print(f"  {len(manifest['changes'])} layers changed, {params:,} stored values; checksums verified")
    for key, value in manifest.get("extra", {}).items():
        print(f"  {key}: {value}")
    return EXIT_OK


def demo_recipes() -> list[Path]:
    """The recipes ``slimtrain demo`` compares (shipped inside the package)."""
    folder = resources.files("slimtrain") / "recipes" / "demo"
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml"))


def _cmd_demo(args: argparse.Namespace) -> int:
    from slimtrain.experiments.comparison import compare
    from slimtrain.experiments.report import results_table, write_report

    start = time.perf_counter()
    # One thread: the demo's models are small, and extra threads only add synchronisation on 2 cores.
    result = compare(demo_recipes(), args.output, overrides=["train.progress=false", "train.threads=1"])
    report = write_report(args.output, title="slimtrain demo: compression-aware training on digits")
    for line in results_table(result["aggregated"]):
        print("  ".join(f"{cell:>12}" for cell in line[:8]))
    print(f"\nreport: {report} (and report.html); wall time {time.perf_counter() - start:.0f}s")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``slimtrain`` command."""
    parser = argparse.ArgumentParser(
        prog="slimtrain", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    overrides = argparse.ArgumentParser(add_help=False)
    overrides.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set optimizer.lr=0.05 (repeatable)",
    )

    p = sub.add_parser("train", parents=[overrides], help="train a recipe and checkpoint it")
    p.add_argument("recipe", type=Path, help="YAML recipe")
    p.add_argument(
        "--run-dir", type=Path, default=None, help="output directory (default <output_dir>/<name>)"
    )
    p.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sweep", help="evaluate one trained run at every compression level")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--structure", choices=["unstructured", "filter", "lowrank", "native"], default=None)
    p.add_argument("--levels", type=float, nargs="+", default=None, help="fractions in [0, 1)")
    p.add_argument(
        "--bn-recalibration", action="store_true", help="also report accuracy after BN recalibration"
    )
    p.add_argument("--latency", action="store_true", help="measure CPU latency of every level (slow)")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("compare", parents=[overrides], help="train, sweep and compare several recipes")
    p.add_argument("recipes", type=Path, nargs="+")
    p.add_argument("--output", type=Path, required=True, help="directory for the runs and the report")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: each recipe's seed)")
    p.add_argument("--structure", choices=["unstructured", "filter", "lowrank"], default=None)
    p.add_argument("--latency", action="store_true", help="measure CPU latency of every level (slow)")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("report", help="write report.md / report.html / plots for a compare or run directory")
    p.add_argument("directory", type=Path)
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "export", help="compress a trained run at one level and save the physically smaller model"
    )
    p.add_argument("run_dir", type=Path)
    p.add_argument("--level", type=_level, required=True, help="compression level in [0, 1)")
    p.add_argument("--structure", choices=["unstructured", "filter", "lowrank", "native"], default=None)
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help="output directory (default RUN_DIR/exported/STRUCTURE-LEVEL)",
    )
    p.add_argument("--onnx", action="store_true", help="also write model.onnx, checked with onnxruntime")
    p.add_argument(
        "--round-to", type=_positive_int, default=None, help="filter: round thinned widths up to a multiple"
    )
    p.add_argument("--csr", action="store_true", help="store linear layers with >= 50%% zeros as CSR")
    p.add_argument(
        "--latency-batch-sizes",
        type=_positive_int,
        nargs="*",
        default=[1, 256],
        help="CPU latency batch sizes (none: skip the measurement)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("inspect", help="load an exported model (checksums verified) and print its manifest")
    p.add_argument("directory", type=Path)
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser(
        "demo", help="compare every method on the embedded digits data (what `make demo` runs)"
    )
    p.add_argument("--output", type=Path, default=DEMO_OUTPUT)
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``slimtrain`` command; returns the exit code."""
    from slimtrain.errors import BadInputError, SlimtrainError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    # A missing file the user named is bad input; other OS errors (disk full, permissions) are failed work.
    except (BadInputError, FileNotFoundError) as err:
        print(f"slimtrain {args.command}: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (SlimtrainError, OSError) as err:
        print(f"slimtrain {args.command}: {err}", file=sys.stderr)
        return EXIT_FAILED
