"""Recording of benchmark results: provenance, per-round values and their summary.

Every benchmark builds one :class:`BenchmarkRecorder`, adds the per-round values of each quantity it
measures, and saves ``benchmarks/results/<name>.json`` plus a generated ``<name>.md`` (see DESIGN.md,
"Conventions").
"""

from __future__ import annotations

import collections
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

DEFAULT_RESULTS_DIR = Path(__file__).resolve().parent / "results"


def results_folder(mode: str) -> Path:
    """Where results of a run in ``mode`` go: ``benchmarks/results``, or its ``quick/`` subfolder.

    Quick runs go to the git-ignored subfolder, so ``make bench`` never overwrites committed full results.
    """
    return DEFAULT_RESULTS_DIR if mode == "full" else DEFAULT_RESULTS_DIR / "quick"


def git_commit(cwd: Path | None = None) -> str:
    """Return the commit checked out at ``cwd`` (this file's repository by default), or ``"unknown"``."""
    where = cwd if cwd is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def cpu_model() -> str:
    """Return the CPU model name from ``/proc/cpuinfo``, falling back to :mod:`platform`."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict[str, Any]:
    """Describe the machine a benchmark runs on: CPU, thread counts, GPU (if any), OS and Python."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_threads": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        # Timings on a shared machine are only as good as its idle state; record how busy it was.
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    return info


class BenchmarkRecorder:
    """Collects the results of one benchmark run together with their provenance.

    Args:
        name: Benchmark name; results go to ``<results_dir>/<name>.json`` and ``<name>.md``.
        argv: The arguments the benchmark's ``main`` received (``None``: ``sys.argv[1:]``). They give the
            reconstructed command ``python -m benchmarks.<module> ...`` and the mode: ``full`` if
            ``--full`` is among them, otherwise ``quick``.
        module: The benchmark module that ran (default ``bench_<name>``); give it when one module writes
            results under several names.

    Example:
        >>> rec = BenchmarkRecorder("toy", ["--quick"])
        >>> rec.add("latency", [1.0, 2.0, 3.0], unit="ms")
        >>> rec.summary["latency"]["median"]
        2.0
    """

    def __init__(self, name: str, argv: list[str] | None, module: str | None = None) -> None:
        if not name or not name.replace("_", "").isalnum():
            raise ValueError(f"benchmark name must be a non-empty identifier, got {name!r}")
        self.name = name
        self.argv = list(sys.argv[1:] if argv is None else argv)
        self.command = shlex.join(["python", "-m", f"benchmarks.{module or f'bench_{name}'}", *self.argv])
        self.mode = "full" if "--full" in self.argv else "quick"
        self.commit = git_commit()
        self.date = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.machine = machine_info()
        self.torch_version = torch.__version__
        self.results: dict[str, dict[str, Any]] = {}
        self.notes: dict[str, Any] = {}

    def add(self, quantity: str, values: list[float] | tuple[float, ...] | float, unit: str) -> None:
        """Record the per-round values of one quantity; median, min and max are derived from them.

        Args:
            quantity: Name of the measured quantity (e.g. ``"latency_ms_b1"``); must be new.
            values: One value per round (a single number counts as one round).
            unit: Unit of the values (``"ms"``, ``"x"``, ``"bytes"`` ...).

        Raises:
            ValueError: If the quantity was already added or no values are given.
        """
        if quantity in self.results:
            raise ValueError(f"quantity {quantity!r} was already added to benchmark {self.name!r}")
        rounds = [float(values)] if isinstance(values, (int, float)) else [float(v) for v in values]
        if not rounds:
            raise ValueError(f"quantity {quantity!r} of benchmark {self.name!r} has no values")
        self.results[quantity] = {
            "unit": unit,
            "median": statistics.median(rounds),
            "min": min(rounds),
            "max": max(rounds),
            "rounds": len(rounds),
            "values": rounds,
        }

    def note(self, key: str, value: Any) -> None:
        """Record an extra field (a setting, a ratio, a version); ``value`` must be JSON-serialisable."""
        json.dumps(value)  # fail here, naming nothing half-written, rather than at save time
        self.notes[key] = value

    @property
    def summary(self) -> dict[str, dict[str, Any]]:
        """The recorded quantities: unit, median, min, max, rounds and per-round values."""
        return self.results

    def to_dict(self) -> dict[str, Any]:
        """Return everything recorded, as saved to ``<name>.json``."""
        return {
            "name": self.name,
            "command": self.command,
            "commit": self.commit,
            "date": self.date,
            "machine": self.machine,
            "torch_version": self.torch_version,
            "mode": self.mode,
            "results": self.results,
            "notes": self.notes,
        }

    def to_markdown(self) -> str:
        """Render the recorded results as a markdown page (provenance, then one table row per quantity)."""
        m = self.machine
        gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
        lines = [
            f"# Benchmark `{self.name}`",
            "",
            f"- command: `{self.command}`",
            f"- mode: {self.mode}",
            f"- date (UTC): {self.date}",
            f"- commit: `{self.commit}`",
            f"- machine: {m['cpu']}, {m['logical_threads']} logical threads, "
            f"{m['torch_threads']} torch threads{gpu}, load average {m.get('load_average_1min')}",
            f"- torch: {self.torch_version}",
            "",
            "| quantity | unit | median | min | max | rounds |",
            "|---|---|---|---|---|---|",
        ]
        for q, r in self.results.items():
            lines.append(
                f"| {q} | {r['unit']} | {_fmt(r['median'])} | {_fmt(r['min'])} | {_fmt(r['max'])} "
                f"| {r['rounds']} |"
            )
        if self.notes:
            lines += ["", "| note | value |", "|---|---|"]
            lines += [f"| {k} | {json.dumps(v)} |" for k, v in self.notes.items()]
        return "\n".join(lines) + "\n"

    def save(self, results_dir: Path | str | None = None) -> Path:
        """Write ``<name>.json`` and ``<name>.md`` atomically into ``results_dir``; return the JSON path.

        The default is :func:`results_folder` of the run's mode.
        """
        results_dir = Path(results_dir) if results_dir is not None else results_folder(self.mode)
        results_dir.mkdir(parents=True, exist_ok=True)
        json_path = results_dir / f"{self.name}.json"
        _write_atomic(json_path, json.dumps(self.to_dict(), indent=2) + "\n")
        _write_atomic(results_dir / f"{self.name}.md", self.to_markdown())
        return json_path


_aten = torch.ops.aten
_SIZE_DEPENDENT = {_aten.nonzero.default, _aten.masked_select.default}
_COPIES = {_aten._to_copy.default, _aten.copy_.default}


def _device_to_host(func: Any, args: tuple, kwargs: dict) -> bool:
    if func is _aten._to_copy.default:
        target = kwargs.get("device")
        return args[0].device.type != "cpu" and target is not None and torch.device(target).type == "cpu"
    return args[0].device.type == "cpu" and args[1].device.type != "cpu"  # copy_(dst, src)


class HostReads(TorchDispatchMode):
    """Counts, by kind, the operations that make the host wait for the device, while it is entered.

    Kinds: ``item`` (``aten._local_scalar_dense``: ``.item()``, ``float()``, ``bool()``), ``size-dependent``
    (``nonzero``, ``masked_select``, ``unique``: their output size depends on the data), ``device-to-host``
    copies, and ``tolist`` (``Tensor.tolist()`` / ``.numpy()``, which bypass the dispatcher on a CPU, counted
    by a ``TorchFunctionMode`` entered with this one; on a GPU they are device-to-host copies). A subclass
    overrides :meth:`add` to attribute the reads (e.g. to training steps).

    Example:
        >>> with HostReads() as reads:
        ...     _ = float(torch.ones(1).sum())
        >>> dict(reads.counts)
        {'item': 1}
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[Any] = collections.Counter()
        self._lists = _ListReads(self)

    def add(self, kind: str) -> None:
        """Count one read of ``kind``."""
        self.counts[kind] += 1

    def __enter__(self) -> HostReads:
        self._lists.__enter__()
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self._lists.__exit__(*exc)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is _aten._local_scalar_dense.default:
            self.add("item")
        elif func in _SIZE_DEPENDENT or "unique" in func.__name__:
            self.add("size-dependent")
        elif func in _COPIES and _device_to_host(func, args, kwargs):
            self.add("device-to-host")
        return func(*args, **kwargs)


class _ListReads(TorchFunctionMode):
    """Adds ``tolist`` / ``numpy`` calls (invisible to the dispatcher on a CPU) to a :class:`HostReads`."""

    def __init__(self, reads: HostReads) -> None:
        super().__init__()
        self.reads = reads

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func in (torch.Tensor.tolist, torch.Tensor.numpy):
            self.reads.add("tolist")
        return func(*args, **(kwargs or {}))


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a CUDA device); nothing to wait for on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_time_ms(
    calls: dict[str, Callable[[], object]], device: torch.device, rounds: int, steps: int = 1, warmup: int = 3
) -> dict[str, list[float]]:
    """Mean milliseconds per call of each function in every round, the functions taking turns in a round.

    The clock starts and stops after :func:`synchronize`, so on a GPU it measures the queued work itself, not
    only its launch. ``warmup`` untimed calls of each function come first (kernels chosen, memory allocated).
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    values: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(steps):
                call()
            synchronize(device)
            values[name].append((time.perf_counter() - start) * 1e3 / steps)
    return values


def gpu_section(rec: BenchmarkRecorder, measure: Callable[[torch.device], None]) -> None:
    """Run ``measure`` on the first CUDA device and note its name, or note that the GPU section was skipped.

    A benchmark's GPU section records its quantities with a ``gpu`` prefix; the note ``gpu_section`` says
    on which device they were measured (``{"device": name, "cuda": version}``) or why there are none.
    """
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA device found"
        rec.note("gpu_section", f"skipped: {why}")
        return
    device = torch.device("cuda", 0)
    rec.note("gpu_section", {"device": torch.cuda.get_device_name(device), "cuda": torch.version.cuda})
    measure(device)


def _fmt(x: float) -> str:
    """Format a number with 4 significant digits, plain for integers."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:.4g}"


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
