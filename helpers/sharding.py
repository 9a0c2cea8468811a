"""Memory arithmetic for weights and sharded training, and the launcher of the FSDP demo.

- :func:`weight_bytes` / :func:`weight_table`: bytes of the weights alone per number format (notebook 00).
- :func:`training_bytes_per_rank` and friends: weights, gradients and Adam state per rank under
  DDP, ZeRO-1, ZeRO-2 and ZeRO-3/FSDP, and how many accelerators a model needs (notebook 07).
- :func:`measured_memory` / :func:`memory_parts`: what the ranks of a run *measured* with PyTorch's
  memory tracker, grouped into kept and gathered parameters, gradients and optimizer state.
- :func:`run_fsdp_training`: runs ``helpers.fsdp_train`` under torchrun, with a time limit and
  the rank logs in the error when it fails.
"""

from __future__ import annotations

from .results import format_bytes  # noqa: F401  (one byte formatter, re-exported for the notebooks)

BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}


def weight_bytes(parameters: int | float, precision: str = "fp32") -> float:
    """Bytes needed to hold ``parameters`` weights at ``precision`` (fp32, fp16, bf16, int8, int4)."""
    if precision not in BYTES_PER_PARAM:
        raise ValueError(f"Unknown precision {precision!r}; use one of {', '.join(BYTES_PER_PARAM)}.")
    if parameters < 0:
        raise ValueError("parameters must be non-negative.")
    return parameters * BYTES_PER_PARAM[precision]


def weight_table(parameters: int | float) -> list[tuple[str, float]]:
    """``(precision, bytes)`` for every precision in :data:`BYTES_PER_PARAM`."""
    return [(precision, weight_bytes(parameters, precision)) for precision in BYTES_PER_PARAM]


# --- training memory: weights, gradients, Adam state, per rank ------------------------------

#: Bytes per parameter for (weights, gradients, optimizer state) when training with Adam.
#: fp32: fp32 weights and gradients, Adam momentum and variance in fp32 (4 + 4 + 8).
#: mixed: fp16/bf16 weights and gradients, plus an fp32 master copy, momentum and variance
#: (2 + 2 + 12), the accounting of the ZeRO paper.
TRAINING_BYTES_PER_PARAM = {"fp32": (4, 4, 8), "mixed": (2, 2, 12)}

#: What each strategy splits across the N ranks: (weights, gradients, optimizer state).
STRATEGIES = {
    "ddp": (False, False, False),
    "zero1": (False, False, True),
    "zero2": (False, True, True),
    "zero3": (True, True, True),
    "fsdp": (True, True, True),
}
STRATEGY_NAMES = {"ddp": "DDP (no sharding)", "zero1": "ZeRO-1 (optimizer)", "zero2": "ZeRO-2 (+ gradients)",
                  "zero3": "ZeRO-3 (+ weights)", "fsdp": "FSDP (= ZeRO-3)"}


def training_bytes_per_rank(parameters: int | float, ranks: int = 1, strategy: str = "ddp",
                            precision: str = "mixed") -> dict:
    """Bytes each rank holds for weights, gradients and Adam state, and their total.

    ``strategy`` is ``ddp`` (every rank keeps everything), ``zero1`` (optimizer
    state split N ways), ``zero2`` (+ gradients), ``zero3`` or ``fsdp`` (+ weights).
    ``precision`` is ``fp32`` (16 B/param) or ``mixed`` (fp16/bf16 with fp32 master
    weights, also 16 B/param but split 2 + 2 + 12). Activations, temporary buffers
    and the all-gathered layer FSDP holds while computing are not included.
    """
    if precision not in TRAINING_BYTES_PER_PARAM:
        raise ValueError(f"Unknown precision {precision!r}; use one of {', '.join(TRAINING_BYTES_PER_PARAM)}.")
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}.")
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
        raise ValueError(f"ranks must be a whole number of at least 1, got {ranks!r}.")
    if parameters < 0:
        raise ValueError("parameters must be non-negative.")
    per_param = TRAINING_BYTES_PER_PARAM[precision]
    split = STRATEGIES[strategy]
    weights, gradients, optimizer = (parameters * size / (ranks if sharded else 1)
                                     for size, sharded in zip(per_param, split))
    return {"weights": weights, "gradients": gradients, "optimizer": optimizer,
            "total": weights + gradients + optimizer}


def training_memory_table(parameters: int | float, ranks: int, precision: str = "mixed",
                          strategies: tuple[str, ...] = ("ddp", "zero1", "zero2", "zero3")) -> list[dict]:
    """One row per strategy: ``{"strategy", "name", "weights", "gradients", "optimizer", "total"}`` in bytes."""
    return [{"strategy": strategy, "name": STRATEGY_NAMES[strategy],
             **training_bytes_per_rank(parameters, ranks, strategy, precision)} for strategy in strategies]


def accelerators_needed(parameters: int | float, memory_bytes: float = 80e9, strategy: str = "zero3",
                        precision: str = "mixed", max_ranks: int = 1_000_000) -> int | None:
    """Fewest ranks whose per-rank training state fits in ``memory_bytes`` (``None`` if none can).

    Only weights, gradients and optimizer state are counted, so this is a lower
    bound: activations and communication buffers need room as well.
    """
    if memory_bytes <= 0:
        raise ValueError("memory_bytes must be positive (80e9 for an 80 GB accelerator).")
    if training_bytes_per_rank(parameters, max_ranks, strategy, precision)["total"] > memory_bytes:
        return None
    low, high = 1, max_ranks  # per-rank bytes only fall as ranks grow: binary search
    while low < high:
        middle = (low + high) // 2
        if training_bytes_per_rank(parameters, middle, strategy, precision)["total"] <= memory_bytes:
            high = middle
        else:
            low = middle + 1
    return low


def print_memory_table(parameters: int | float, ranks: int, precision: str = "mixed") -> list[dict]:
    """Print :func:`training_memory_table` as an aligned table and return its rows."""
    rows = training_memory_table(parameters, ranks, precision)
    print(f"{parameters / 1e9:.3g} B parameters, {precision} precision, {ranks} ranks — bytes per rank")
    print(f"{'strategy':<22}{'weights':>11}{'gradients':>11}{'Adam':>11}{'total':>11}")
    for row in rows:
        print(f"{row['name']:<22}" + "".join(f"{format_bytes(row[part]):>11}"
                                             for part in ("weights", "gradients", "optimizer", "total")))
    return rows


# --- measured memory of a run ----------------------------------------------------------------

#: How :func:`memory_parts` groups the memory tracker's categories (plain model and FSDP2).
MEMORY_PARTS = {
    "parameters kept": ("Parameter", "Sharded Param", "Buffer"),
    "parameters gathered": ("Unsharded Param", "All Gather"),
    "gradients kept": ("Gradient", "Sharded Grad"),
    "gradients unsharded + reduce-scatter": ("Unsharded Grad", "Reduce Scatter"),
    "optimizer state": ("Optstate", "OptState"),
}


def memory_parts(snapshot: dict) -> dict:
    """Group one tracker snapshot (``{"Parameter": bytes, ...}``) into the :data:`MEMORY_PARTS`."""
    return {part: sum(snapshot.get(kind, 0) for kind in kinds) for part, kinds in MEMORY_PARTS.items()}


def measured_memory(report: dict) -> list[dict]:
    """One row per rank of an ``fsdp_train`` report: its measured memory through the tracked steps.

    ``model_state_peak`` is the largest model-state total (parameters, gradients and optimizer state,
    including FSDP's gathered copies and communication buffers) seen by the memory tracker in any
    tracked step; ``parts`` splits it by :func:`memory_parts` at that moment; ``total_peak`` is the
    peak of every tracked tensor (activations and temporaries too). ``steps`` lists each tracked
    step's model-state peak. ``init_rss`` is what model initialisation added to the process's
    resident memory; ``max_rss`` the process's peak resident memory (runtime and libraries included).
    """
    rows = []
    for rank in report["ranks"]:
        memory = rank.get("memory")
        if not memory or not memory.get("tracked_steps"):
            raise ValueError(f"Rank {rank.get('rank')} has no tracked steps; run fsdp_train with --memory-steps >= 1.")
        tracked = memory["tracked_steps"]
        worst = max(tracked, key=lambda step: step["model_state_peak"])
        rows.append({"rank": rank["rank"], "model_state_peak": worst["model_state_peak"],
                     "parts": memory_parts(worst["model_state_at_peak"]),
                     "total_peak": max(step["total_peak"] for step in tracked),
                     "steps": [step["model_state_peak"] for step in tracked],
                     "rss_before_init": memory["rss_before_init"],
                     "init_rss": memory["rss_after_init"] - memory["rss_before_init"],
                     "max_rss": memory["end_max_rss"]})
    return rows


# --- running the FSDP demo ---------------------------------------------------------------------

class FSDPRunError(RuntimeError):
    """The torchrun job failed or timed out; the message carries the rank logs."""


def _tail(path, lines: int = 25) -> str:
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        return "(no log written)"
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def _kill_tree(pid: int) -> None:
    """Kill a process and all of its descendants."""
    import os
    import signal

    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    family = parent.children(recursive=True) + [parent]
    for member in family:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=10)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_fsdp_training(world_size: int = 2, steps: int = 8, shard: bool = True, out_dir=None,
                      timeout_s: float = 600.0, extra_args: tuple[str, ...] = ()) -> dict:
    """Launch ``helpers.fsdp_train`` under torchrun and return the report it writes.

    Runs ``python -m torch.distributed.run --standalone --nproc_per_node <world_size>
    -m helpers.fsdp_train ...`` in a new process group. If the job fails or runs
    longer than ``timeout_s`` seconds, every process of the job is killed and
    :class:`FSDPRunError` shows the torchrun output and the end of each rank's log.
    """
    import json
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from . import config

    if world_size < 1 or steps < 1:
        raise ValueError("world_size and steps must be at least 1.")
    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="fsdp_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = out_dir / "report.json"
    report_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world_size),
               "-m", "helpers.fsdp_train", "--steps", str(steps), "--out", str(report_path),
               "--log-dir", str(out_dir), *([] if shard else ["--no-shard"]), *extra_args]
    environment = {**os.environ, "PYTHONPATH": str(config.PROJECT_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // world_size)),
                   "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
                   # threads sleep instead of spinning when they wait: a busy machine would
                   # otherwise slow a 2-thread rank down several-fold
                   "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    process = subprocess.Popen(command, cwd=config.PROJECT_ROOT, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout_s)
        failure = None if process.returncode == 0 and report_path.exists() else f"exit code {process.returncode}"
    except subprocess.TimeoutExpired:
        _kill_tree(process.pid)  # torchrun and every rank it started (ranks may sit in their own groups)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            output = "(torchrun output unavailable: the pipe stayed open after the kill)"
        failure = f"no result after {timeout_s:.0f} s (killed)"
    if failure:
        logs = "\n".join(f"--- rank {rank} log ({out_dir / f'rank{rank}.log'}) ---\n"
                         f"{_tail(out_dir / f'rank{rank}.log')}"
                         for rank in range(world_size))
        raise FSDPRunError(f"The FSDP run failed: {failure}.\nCommand: {' '.join(command)}\n"
                           f"--- torchrun output (last lines) ---\n{chr(10).join(output.splitlines()[-25:])}\n{logs}")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    report["command"] = " ".join(command)
    return report
