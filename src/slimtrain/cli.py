"""The ``slimtrain`` command line: train, sweep, compare, report, export, inspect, demo.

Exit codes: 0 success; 1 the work failed (:class:`slimtrain.errors.WorkFailedError`: training diverged, a
checkpoint or exported model is unusable or corrupted, an export does not reproduce its model, ...); 2 invalid
or unsupported input (:class:`slimtrain.errors.BadInputError`: bad recipe, unknown key, missing file, bad
arguments, a model the command cannot handle); 130 stopped by SIGINT (Ctrl-C) or SIGTERM (``train`` first
writes a checkpoint and names the ``--resume`` command that continues it). Errors print one line, without a
traceback; ``slimtrain --debug COMMAND ...`` prints the traceback too.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a Ctrl-C
DEMO_OUTPUT = Path("runs/demo")


def _cmd_train(args: argparse.Namespace) -> int:
    from slimtrain.train.config import load_recipe
    from slimtrain.train.trainer import Trainer

    run_dir = args.run_dir
    try:
        recipe = load_recipe(args.recipe, args.set)
        trainer = Trainer(recipe, args.run_dir)
        run_dir = trainer.run_dir
        results = trainer.fit(resume=args.resume, overwrite=args.overwrite)
    except KeyboardInterrupt as interruption:
        raise KeyboardInterrupt(
            f"{_stopped(interruption)}; continue with: {_resume_command(args, run_dir)}"
        ) from interruption
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
    from slimtrain.metrics import describe_latency

    nan = float("nan")
    print(f"{'level':>7}  {'test acc':>8}  {'sparsity':>8}  {'storage':>8}  {'ratio':>7}  {'speed-up':>8}")
    for row in rows:
        print(
            f"{_level_cell(row):>7}  {row['acc_compressed_no_ft']:8.4f}  "
            f"{row.get('sparsity_prunable', nan):8.4f}  {row.get('storage_fraction_prunable', nan):8.4f}  "
            f"{row.get('compression_ratio_all', nan):7.2f}  {row.get('theoretical_speedup', nan):8.2f}"
        )
        for key in sorted(k for k in row if k.startswith("latency_ms_b")):
            batch = int(key.removeprefix("latency_ms_b"))
            print(f"         CPU latency batch {batch}: {describe_latency(row, batch)}")
    print(
        "sparsity: zeros in conv/linear weights; storage: their stored fraction (non-zeros while zeros stay "
        "in dense tensors); ratio: compression ratio, all parameters; speed-up: theoretical, dense/effective "
        "MACs"
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


def _resume_command(args: argparse.Namespace, run_dir: Path | None) -> str:
    """The command that continues an interrupted ``slimtrain train`` (same recipe and overrides)."""
    words = ["slimtrain", "train", str(args.recipe)]
    if run_dir is not None:
        words += ["--run-dir", str(run_dir)]
    for override in args.set:
        words += ["--set", override]
    return shlex.join([*words, "--resume"])


def _stopped(interruption: KeyboardInterrupt) -> str:
    """What stopped a command: the interruption's message, or a plain Ctrl-C."""
    return str(interruption) or "stopped by SIGINT (Ctrl-C)"


# What to do after an interrupted command, for commands that continue where they stopped.
_AFTER_INTERRUPTION = {
    "sweep": "run the same command again to continue",
    "compare": "run the same command again to continue (finished runs are reused, a training is resumed)",
    "demo": "run the same command again to continue (finished runs are reused, a training is resumed)",
}


def _level(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a compression level, a number in [0, 1) such as 0.9; got {text!r}"
        )
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 0.9, got {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _level_cell(row: dict) -> str:
    """A sweep row's level: ``0.500``, or a level set by training under its option's name (``tau=0.1``)."""
    option, level = row.get("level_option"), row["requested_level"]
    if level is None:
        return "as trained"
    return f"{option}={level:g}" if option else f"{level:.3f}"


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
    if result.level is None:
        at = "the level its training set"
    else:
        at = f"{result.level_option or 'level'} {result.level:g}"
    print(f"exported {result.structure} at {at}: {result.path}")
    print(
        f"  test accuracy {result.acc_exported:.4f} (compressed model {result.acc_compressed:.4f}); "
        f"max |output difference| {result.max_abs_error:.2g}"
    )
    # The ratio's N_stored: the stored count of an exported model, the non-zeros where zeros stay stored.
    counted = "stored" if m["model_state"] == "exported" else "non-zero"
    print(
        f"  parameters {m['params_stored_all']:,} stored ({m['params_nonzero_all']:,} non-zero), dense model "
        f"{result.params_dense_reference:,}: compression ratio {m['compression_ratio_all']:.2f}x of the "
        f"{counted} count"
    )
    if "macs_dense" in m:
        print(
            f"  MACs per sample {m['macs_effective']:,.0f} of {m['macs_dense']:,.0f} dense "
            f"(theoretical speed-up {m['theoretical_speedup']:.2f}x)"
        )
    from slimtrain.metrics import describe_latency

    for batch in args.latency_batch_sizes:
        print(f"  CPU latency batch {batch}: {describe_latency(result.latency, batch)}")
    if result.onnx_path is not None:
        print(f"  ONNX: {result.onnx_path} (outputs checked with onnxruntime)")
    return EXIT_OK


def _cmd_inspect(args: argparse.Namespace) -> int:
    import slimtrain
    from slimtrain.compress import read_manifest

    if not args.directory.is_dir():
        raise FileNotFoundError(f"{args.directory} is not a directory")
    from slimtrain.metrics import count_parameters

    model = slimtrain.load(args.directory)
    manifest = read_manifest(args.directory)
    base = manifest["base_model"]
    # The stored count `slimtrain export` prints (CSR layers: their values); buffers are not parameters.
    stored = count_parameters(model, "all").stored
    buffers = sum(b.numel() for b in model.buffers())
    print(f"{args.directory}: {base.get('registry_name', base.get('factory'))} {base['kwargs']}")
    print(
        f"  {len(manifest['changes'])} layers changed, {stored:,} parameters stored"
        + (f" (+ {buffers:,} buffer entries: sparse indices, running statistics)" if buffers else "")
        + "; checksums verified"
    )
    for key, value in manifest.get("extra", {}).items():
        note = ""
        if key == "params_stored_all" and value != stored:
            note = f" (as recorded at export by an earlier version; stored now: {stored:,})"
        print(f"  {key}: {value}{note}")
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
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback of any error (before the command)"
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
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--resume", action="store_true", help="continue from the run directory's last checkpoint"
    )
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="train again into a directory holding a finished run, deleting its checkpoints, results, "
        "sweeps, reports, plots, exports and TensorBoard logs first",
    )
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sweep", help="evaluate one trained run at every compression level")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--structure", choices=["unstructured", "filter", "lowrank", "native"], default=None)
    p.add_argument("--levels", type=_number, nargs="+", default=None, help="fractions in [0, 1)")
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
    p.add_argument(
        "--level",
        type=_level,
        default=None,
        help="compression level in [0, 1) (required unless the method sets its level during training: "
        "then only the run's own level, the default)",
    )
    p.add_argument("--structure", choices=["unstructured", "filter", "lowrank", "native"], default=None)
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help="output directory (default RUN_DIR/exported/STRUCTURE-LEVEL, e.g. unstructured-0.9 or "
        "native-tau0.1)",
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


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While a command runs, SIGTERM stops it like Ctrl-C (a :class:`KeyboardInterrupt`), then as before.

    Only where SIGTERM has its default action and this is the main thread; training replaces this with its
    own handler, which first writes a checkpoint.
    """
    main_thread = threading.current_thread() is threading.main_thread()
    if not main_thread or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt("stopped by SIGTERM")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``slimtrain`` command; returns the exit code."""
    from slimtrain.errors import BadInputError, SlimtrainError

    args = build_parser().parse_args(argv)
    try:
        with _sigterm_interrupts():
            return args.func(args)
    except KeyboardInterrupt as interruption:
        error: BaseException = interruption
        code, message = EXIT_INTERRUPTED, _stopped(interruption)
        if args.command in _AFTER_INTERRUPTION:
            message += f"; {_AFTER_INTERRUPTION[args.command]}"
    # A missing file the user named is bad input; other OS errors (disk full, permissions) are failed work.
    except (BadInputError, FileNotFoundError) as err:
        error, code, message = err, EXIT_BAD_INPUT, str(err)
    except (SlimtrainError, OSError) as err:
        error, code, message = err, EXIT_FAILED, str(err)
    except Exception as err:  # a bug: one line, and how to see where it happened
        error, code = err, EXIT_FAILED
        message = f"internal error: {type(err).__name__}: {err}"
        if not getattr(args, "debug", False):
            message += f" (rerun as `slimtrain --debug {args.command} ...` for the traceback, and report it)"
    if getattr(args, "debug", False):
        traceback.print_exception(error)
    print(f"slimtrain {args.command}: {message}", file=sys.stderr)
    return code
