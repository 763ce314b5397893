"""The ``slimtrain`` command line: train, sweep, compare, report, select, export, inspect, demo, list.

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
import inspect
import os
import re
import shlex
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

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
    from slimtrain.experiments.report import SWEEP_COLUMNS, level_name, results_table
    from slimtrain.metrics import describe_latency

    _print_table(results_table(rows, SWEEP_COLUMNS))
    for row in rows:
        for key in sorted(k for k in row if k.startswith("latency_ms_b")):
            batch = int(key.removeprefix("latency_ms_b"))
            print(f"{level_name(row)}: CPU latency batch {batch}: {describe_latency(row, batch)}")
    print(
        "sparsity: zeros in conv/linear weights; storage fraction: their stored fraction (non-zeros while "
        "zeros stay in dense tensors); compression ratio: all parameters; speed-up: theoretical, "
        "dense/effective MACs"
    )
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    from slimtrain.experiments.comparison import compare
    from slimtrain.experiments.report import SUMMARY_COLUMNS, results_table, write_report

    result = compare(
        args.recipes,
        args.output,
        seeds=args.seeds,
        overrides=args.set,
        structure=args.structure,
        latency=args.latency,
    )
    _print_table(results_table(result["aggregated"], SUMMARY_COLUMNS))
    print(f"report: {write_report(args.output)} (and report.html)")
    return EXIT_OK


def _print_table(table: list[list[str]]) -> None:
    """Print a header row and rows as aligned columns (text left, numbers right)."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        cells = [
            cell.ljust(width) if i < 1 or not (cell[:1].isdigit() or cell[:1] in "-–") else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())


def _cmd_select(args: argparse.Namespace) -> int:
    from slimtrain.experiments.selecting import select

    choices = select(args.directory, args.max_drop, args.reference)
    print(
        f"most compressed level whose mean validation accuracy is at most {args.max_drop:g} below the dense "
        "model's (chosen on validation; test accuracy reported):"
    )
    table = [
        ["recipe", "structure", "level", "compression ratio", "val acc", "dense val acc", "drop", "test acc"]
    ]
    for choice in choices:
        reference = f"{choice.reference_val:.4f}" + ("" if choice.reference.dense else " (own)")
        row = choice.row
        if row is None:
            table.append(
                [
                    choice.recipe,
                    "–",
                    "none within the drop",
                    "–",
                    f"best {choice.best_val:.4f}",
                    reference,
                    "–",
                    "–",
                ]
            )
            continue
        spread = " ± {:.4f}".format
        table.append(
            [
                choice.recipe,
                row["structure"],
                choice.level or "–",
                f"{row.get('compression_ratio_all', float('nan')):.2f}x",
                f"{row['val_acc_compressed_no_ft']:.4f}"
                + (spread(row["val_acc_compressed_no_ft_std"]) if row["seeds"] > 1 else ""),
                reference,
                f"{choice.drop:+.4f}",
                f"{row['acc_compressed_no_ft']:.4f}"
                + (spread(row["acc_compressed_no_ft_std"]) if row["seeds"] > 1 else ""),
            ]
        )
    _print_table(table)
    return EXIT_OK


def _plain(text: str) -> str:
    """Text without reST markup: ``x`` becomes x, :class:`~a.B` becomes B."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    return text.replace("``", "")


def _summary(obj: object) -> str:
    """The first paragraph of an object's docstring, on one line, in plain text."""
    doc = inspect.getdoc(obj) or "(no description)"
    return _plain(" ".join(doc.split("\n\n")[0].split()))


def _list_models() -> list[tuple[str, str]]:
    from slimtrain.models.registry import MODELS

    return [(name, _summary(factory)) for name, factory in MODELS.items()]


def _list_methods() -> list[tuple[str, str]]:
    from slimtrain.train.method import METHODS

    lines = []
    for name, method in METHODS.items():
        if method.levels_chosen == "after_training":
            levels = f"levels after training ({', '.join(method.structures)})"
        else:
            levels = "level set in training" + (f" ({method.level_option})" if method.level_option else "")
        lines.append((name, f"[{levels}] {_summary(method)}"))
    return lines


def _list_datasets() -> list[tuple[str, str]]:
    from slimtrain.data.registry import DATASETS

    return [(name, _summary(builder)) for name, builder in DATASETS.items()]


def _list_constraints() -> list[tuple[str, str]]:
    import slimtrain.fw  # noqa: F401  (defining the sets registers them)
    from slimtrain.fw.base import CONSTRAINT_SETS

    return [(name, _summary(cls)) for name, cls in CONSTRAINT_SETS.items()]


def _list_structures() -> list[tuple[str, str]]:
    from slimtrain.compress.standard import STRUCTURES

    return list(STRUCTURES.items())


# What `slimtrain list KIND` lists: name → (name, one line) pairs.
LISTS: dict[str, Callable[[], list[tuple[str, str]]]] = {
    "models": _list_models,
    "methods": _list_methods,
    "datasets": _list_datasets,
    "constraints": _list_constraints,
    "structures": _list_structures,
}
STRUCTURE_CHOICES = ("unstructured", "filter", "lowrank", "native")


def _cmd_list(args: argparse.Namespace) -> int:
    kinds = [args.kind] if args.kind else list(LISTS)
    for kind in kinds:
        entries = LISTS[kind]()
        if len(kinds) > 1:
            print(f"{kind}:")
        width = max(len(name) for name, _ in entries)
        indent = "  " if len(kinds) > 1 else ""
        for name, line in entries:
            print(f"{indent}{name.ljust(width)}  {line}")
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
    if result.params_budget is not None:
        over = m["params_stored_all"] - result.params_budget
        if args.csr or args.round_to is not None:  # the stored count is no longer the one the budget bounds
            verdict = "not compared (--csr and --round-to change the stored count)"
        else:
            verdict = f"exceeded by {over:,}" if over > 0 else "met"
        print(f"  parameter budget of the training {result.params_budget:,}: {verdict}")
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
    from slimtrain.experiments.report import SUMMARY_COLUMNS, results_table, write_report

    start = time.perf_counter()
    # One thread: the demo's models are small, and extra threads only add synchronisation on 2 cores. The
    # runs' own progress is off: the demo shows run k/N and each sweep instead.
    overrides = ["train.progress=false", "train.threads=1"]
    result = compare(demo_recipes(), args.output, overrides=overrides, progress=True)
    report = write_report(args.output, title="slimtrain demo")
    _print_table(results_table(result["aggregated"], SUMMARY_COLUMNS))
    print(f"\nreport: {report} (and report.html); wall time {time.perf_counter() - start:.0f}s")
    return EXIT_OK


DESCRIPTION = """\
Compression-aware training: train a network so that it can be pruned or factorized with little accuracy
lost, evaluate it at every compression level, compare methods, and export the smaller model.

exit codes: 0 success; 1 the work failed (training diverged, a checkpoint or exported model is unusable);
2 invalid input (bad recipe, unknown key or name, missing file, bad arguments); 130 stopped by Ctrl-C or
SIGTERM (train first writes a checkpoint and prints the command that continues it). Errors print one line;
--debug adds the traceback."""

EPILOG = """\
examples:
  slimtrain demo                      compare every method on the embedded digits data (about a minute)
  slimtrain list methods              the methods, and whether each sets its level during training
  slimtrain train configs/fashion-mnist/lenet5-sfw-ksupport.yaml
  slimtrain compare configs/fashion-mnist/lenet5-dense.yaml configs/fashion-mnist/lenet5-sfw-ksupport.yaml \\
      --output runs/cmp --seeds 0 1 2
  slimtrain select runs/cmp --max-drop 0.01
  slimtrain export runs/cmp/lenet5-sfw-ksupport/seed0 --level 0.9

Run "slimtrain COMMAND --help" for a command's options and examples. Documentation: docs/ in the
repository (docs/training.md, docs/export.md, docs/metrics.md)."""

_EXAMPLES = {
    "train": """\
examples:
  slimtrain train configs/fashion-mnist/lenet5-sfw-ksupport.yaml
  slimtrain train recipe.yaml --set optimizer.lr=0.05 --set train.epochs=5 --run-dir runs/quick
  slimtrain train recipe.yaml --run-dir runs/quick --resume     continue an interrupted run""",
    "sweep": """\
examples:
  slimtrain sweep runs/lenet5-sfw-ksupport
  slimtrain sweep runs/lenet5-sfw-ksupport --structure filter --levels 0.25 0.5 0.75
  slimtrain sweep runs/lenet5-swd --latency     a method that sets its level in training: that level only""",
    "compare": """\
examples:
  slimtrain compare configs/fashion-mnist/lenet5-dense.yaml configs/fashion-mnist/lenet5-swd.yaml \\
      --output runs/cmp --seeds 0 1 2
  slimtrain compare a.yaml b.yaml --output runs/smoke --set train.epochs=1 --set train.progress=false""",
    "report": """\
examples:
  slimtrain report runs/cmp                   after slimtrain compare
  slimtrain report runs/lenet5-sfw-ksupport   after slimtrain sweep""",
    "select": """\
examples:
  slimtrain select runs/cmp --max-drop 0.01              within one point of the dense recipe's accuracy
  slimtrain select runs/cmp --max-drop 0.005 --reference lenet5-dense
  slimtrain select runs/lenet5-sfw-ksupport --max-drop 0.02   one run: its own uncompressed model""",
    "export": """\
examples:
  slimtrain export runs/lenet5-sfw-ksupport --level 0.9 --onnx
  slimtrain export runs/resnet8-sfw-group --structure filter --level 0.5 --round-to 8
  slimtrain export runs/lenet5-swd             a method that sets its level in training: no --level""",
    "inspect": """\
example:
  slimtrain inspect runs/lenet5-sfw-ksupport/exported/unstructured-0.9""",
    "demo": """\
examples:
  slimtrain demo
  slimtrain demo --output /tmp/demo""",
    "list": """\
examples:
  slimtrain list              everything
  slimtrain list methods
  slimtrain list constraints  the constraint sets of method sfw (options.constraint)""",
}


def _add(sub: argparse._SubParsersAction, name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand with its one-line help as description and its examples as epilog."""
    return sub.add_parser(
        name,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        epilog=_EXAMPLES[name],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``slimtrain`` command."""
    from slimtrain import __version__

    parser = argparse.ArgumentParser(
        prog="slimtrain",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"slimtrain {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback of any error (before the command)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    overrides = argparse.ArgumentParser(add_help=False)
    overrides.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set optimizer.lr=0.05 (repeatable; values are read as YAML)",
    )
    structure_help = (
        "compression structure: unstructured (single weights), filter (whole conv filters), lowrank "
        "(factorized convs) or native (the method's own form); default the recipe's evaluation.structure"
    )

    p = _add(sub, "train", "train a recipe and checkpoint it", parents=[overrides])
    p.add_argument("recipe", type=Path, help="YAML recipe (see configs/ and docs/training.md)")
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

    p = _add(sub, "sweep", "evaluate one trained run at every compression level")
    p.add_argument("run_dir", type=Path, help="a finished run directory (made by slimtrain train)")
    p.add_argument("--structure", choices=STRUCTURE_CHOICES, default=None, help=structure_help)
    p.add_argument(
        "--levels",
        type=_number,
        nargs="+",
        default=None,
        metavar="LEVEL",
        help="levels in [0, 1): sparsity, fraction of filters or of rank removed (default the recipe's "
        "evaluation.levels); a method that sets its level during training has only its own",
    )
    p.add_argument(
        "--bn-recalibration", action="store_true", help="also report accuracy after BN recalibration"
    )
    p.add_argument("--latency", action="store_true", help="measure CPU latency of every level (slow)")
    p.set_defaults(func=_cmd_sweep)

    p = _add(sub, "compare", "train, sweep and compare several recipes", parents=[overrides])
    p.add_argument(
        "recipes", type=Path, nargs="+", metavar="RECIPE", help="YAML recipes sharing data, model and epochs"
    )
    p.add_argument("--output", type=Path, required=True, help="directory for the runs and the report")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="SEED",
        help="seeds (default: each recipe's seed)",
    )
    p.add_argument(
        "--structure",
        choices=STRUCTURE_CHOICES[:-1],
        default=None,
        help="compression structure of the methods that compress after training (default each recipe's); "
        "methods that set their level during training are evaluated native",
    )
    p.add_argument("--latency", action="store_true", help="measure CPU latency of every level (slow)")
    p.set_defaults(func=_cmd_compare)

    p = _add(sub, "report", "write report.md / report.html / plots for a compare or run directory")
    p.add_argument(
        "directory", type=Path, help="a compare --output directory, or a run directory after slimtrain sweep"
    )
    p.set_defaults(func=_cmd_report)

    p = _add(sub, "select", "choose the most compressed level within an accuracy drop of the dense model")
    p.add_argument(
        "directory",
        type=Path,
        metavar="RUN_OR_COMPARE_DIR",
        help="a compare --output directory, or a run directory after slimtrain sweep",
    )
    p.add_argument(
        "--max-drop",
        type=_number,
        default=0.01,
        metavar="DROP",
        help="largest allowed drop of mean validation accuracy below the dense model's, absolute "
        "(default 0.01: one percentage point)",
    )
    p.add_argument(
        "--reference",
        default=None,
        metavar="RECIPE",
        help="the recipe whose uncompressed model is the dense reference (default: the recipe of method "
        "dense; without one, each recipe's own model before compression)",
    )
    p.set_defaults(func=_cmd_select)

    p = _add(sub, "export", "compress a trained run at one level and save the physically smaller model")
    p.add_argument("run_dir", type=Path, help="a finished run directory (made by slimtrain train)")
    p.add_argument(
        "--level",
        type=_level,
        default=None,
        help="compression level in [0, 1) (required unless the method sets its level during training: "
        "then only the run's own level, the default)",
    )
    p.add_argument("--structure", choices=STRUCTURE_CHOICES, default=None, help=structure_help)
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
        metavar="N",
        help="CPU latency batch sizes (default 1 256; none: skip the measurement)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=_cmd_export)

    p = _add(sub, "inspect", "load an exported model (checksums verified) and print its manifest")
    p.add_argument("directory", type=Path, help="an exported model directory (made by slimtrain export)")
    p.set_defaults(func=_cmd_inspect)

    p = _add(sub, "demo", "compare every method on the embedded digits data (what make demo runs)")
    p.add_argument(
        "--output",
        type=Path,
        default=DEMO_OUTPUT,
        help=f"directory for the runs and the report (default {DEMO_OUTPUT})",
    )
    p.set_defaults(func=_cmd_demo)

    p = _add(sub, "list", "list the registered models, methods, datasets, constraint sets or structures")
    p.add_argument(
        "kind", nargs="?", choices=tuple(LISTS), default=None, help="what to list (default: everything)"
    )
    p.set_defaults(func=_cmd_list)
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


@contextlib.contextmanager
def _one_line_warnings(command: str, debug: bool) -> Iterator[None]:
    """Warnings print as one line naming the command (with ``--debug``: Python's form, file and line).

    Only where nobody else handles them: a caller recording warnings (``catch_warnings(record=True)``,
    ``pytest.warns``) or routing them (``logging.captureWarnings``) keeps them.
    """
    default = (
        warnings.showwarning is getattr(warnings, "_showwarning_orig", None)
        and getattr(getattr(warnings, "_showwarnmsg_impl", None), "__module__", None) == "warnings"
    )
    if debug or not default:
        yield
        return

    from slimtrain.errors import one_line

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        print(f"slimtrain {command}: warning: {one_line(message)} ({category.__name__})", file=sys.stderr)

    previous = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``slimtrain`` command; returns the exit code."""
    from slimtrain.errors import BadInputError, SlimtrainError

    args = build_parser().parse_args(argv)
    try:
        with _sigterm_interrupts(), _one_line_warnings(args.command, getattr(args, "debug", False)):
            return args.func(args)
    except BrokenPipeError:
        # The reader of our output went away (`slimtrain inspect DIR | head`): stop quietly, as `cat` does;
        # later writes (and the interpreter's final flush) go nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
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
