"""Train the workbook's LLM for a few steps with PyTorch FSDP2, one process per rank.

Launch with torchrun (notebook 07 does it through :func:`helpers.sharding.run_fsdp_training`)::

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m helpers.fsdp_train --steps 8 --out report.json

Every rank builds the model on the meta device (shapes, no storage), ``fully_shard``
splits each decoder layer and then the root module (embeddings, final norm, tied LM
head) across the ranks, ``to_empty`` allocates only the local shards, and each rank
reads just its own rows of every weight from the safetensors checkpoint: the full
model never exists on any rank. AdamW then trains on packed blocks of support-ticket
text; each rank reads its own slice of every global batch. Each rank reports the
bytes it *holds* (its local shards of parameters, gradients and Adam state: the
arithmetic), and *measures* its memory through ``--memory-steps`` extra steps with
PyTorch's memory tracker (every tensor storage created or freed, by category,
including FSDP's all-gathered layers), plus its process RSS. Rank 0 writes all of
it, with the loss curve and per-step times, to the JSON report.

``--no-shard`` trains the plain model instead (with one process: the single-device
baseline; with several: DDP, where every rank holds everything). The global batch
is the same in every configuration, so the loss curves should agree up to
floating-point rounding.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps")
    parser.add_argument("--out", required=True, help="JSON report written by rank 0")
    parser.add_argument("--log-dir", default=None, help="folder for rank<N>.log (default: next to --out)")
    parser.add_argument("--no-shard", action="store_true", help="train without FSDP (baseline)")
    parser.add_argument("--global-batch", type=int, default=4, help="sequences per step over all ranks")
    parser.add_argument("--seq-len", type=int, default=64, help="tokens per training sequence")
    parser.add_argument("--distinct-batches", type=int, default=4,
                        help="global batches in the training pool; steps cycle through them")
    parser.add_argument("--memory-steps", type=int, default=2,
                        help="extra untimed steps run under PyTorch's memory tracker after the timed ones")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=180.0, help="limit for any collective operation")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: one GPU per rank with NCCL when there are enough GPUs, else CPU with gloo")
    return parser.parse_args(argv)


def choose_backend(requested: str, cuda_available: bool, gpu_count: int, world_size: int) -> tuple[str, str]:
    """``(process-group backend, device type)`` for ``world_size`` ranks on this machine.

    Pass the ranks of this machine (:func:`ranks_on_this_machine`), not of the whole job.

    NCCL on CUDA needs one GPU per rank (two ranks may not share one GPU), so ``auto``
    picks ``("nccl", "cuda")`` only when there are at least ``world_size`` GPUs, and
    ``("gloo", "cpu")`` otherwise. ``cuda`` insists on GPUs (ValueError when too few);
    ``cpu`` always gives gloo on the CPU.
    """
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {requested!r}.")
    enough_gpus = cuda_available and gpu_count >= world_size
    if requested == "cuda" and not enough_gpus:
        raise ValueError(f"--device cuda needs one GPU per rank: {world_size} ranks, "
                         f"{gpu_count if cuda_available else 0} usable GPUs.")
    if requested == "cuda" or (requested == "auto" and enough_gpus):
        return "nccl", "cuda"
    return "gloo", "cpu"


def ranks_on_this_machine(environ) -> int:
    """Ranks torchrun started on this machine (``LOCAL_WORLD_SIZE``; ``WORLD_SIZE`` when unset).

    Each of them needs its own GPU, so this, not the world size over all machines, is what
    :func:`choose_backend` compares with the local GPU count: 2 machines x 8 ranks need 8 GPUs each.
    """
    return int(environ.get("LOCAL_WORLD_SIZE", environ.get("WORLD_SIZE", "1")))


def backend_for_this_machine(requested: str = "auto", environ=None) -> tuple[str, str]:
    """:func:`choose_backend` for the GPUs PyTorch sees here and the ranks torchrun started here."""
    import torch

    environ = os.environ if environ is None else environ
    cuda = torch.cuda.is_available()
    return choose_backend(requested, cuda, torch.cuda.device_count() if cuda else 0, ranks_on_this_machine(environ))


class RankLog:
    """Append-only log file per rank; rank 0 also echoes to stdout."""

    def __init__(self, folder: Path, rank: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.rank = rank
        self.path = folder / f"rank{rank}.log"
        self.handle = self.path.open("w", encoding="utf-8")
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        line = f"[rank {self.rank} {time.perf_counter() - self.start:6.1f}s] {message}"
        self.handle.write(line + "\n")
        self.handle.flush()
        if self.rank == 0:
            print(line, flush=True)


def ticket_blocks(tokenizer, count: int, seq_len: int, seed: int):
    """``count`` blocks of ``seq_len`` token ids cut from shuffled training tickets joined by EOS."""
    import torch

    from .data import load_tickets

    texts = [ticket.text for ticket in load_tickets("train")]
    random.Random(seed).shuffle(texts)
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id])
        if len(stream) >= count * seq_len:
            break
    if len(stream) < count * seq_len:
        raise ValueError(f"Only {len(stream)} ticket tokens; need {count * seq_len}. Lower --seq-len or the batch.")
    return torch.tensor(stream[: count * seq_len]).view(count, seq_len)


def local_bytes(tensor) -> int:
    """Bytes of the part of ``tensor`` stored in this process (the local shard of a DTensor)."""
    from torch.distributed.tensor import DTensor

    if isinstance(tensor, DTensor):
        tensor = tensor.to_local()
    return tensor.numel() * tensor.element_size()


def held_bytes(model, optimizer) -> dict:
    """Bytes this rank holds for parameters, gradients and optimizer state, plus the full parameter size."""
    import torch

    parameters = list({id(p): p for p in model.parameters()}.values())  # tied weights once
    state_tensors = [value for state in optimizer.state.values() for value in state.values()
                     if isinstance(value, torch.Tensor)]
    return {
        "param_bytes": sum(local_bytes(p) for p in parameters),
        "grad_bytes": sum(local_bytes(p.grad) for p in parameters if p.grad is not None),
        "optimizer_bytes": sum(local_bytes(t) for t in state_tensors),
        "full_param_bytes": sum(p.numel() * p.element_size() for p in parameters),  # DTensor numel is global
    }


def shard_rows(rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """``(first row, row count)`` of ``rank``'s part of a tensor with ``rows`` rows split along dim 0.

    FSDP2 splits each parameter like ``torch.chunk``: chunks of ``ceil(rows / world_size)`` rows,
    so the last ranks may get fewer rows, or none.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not one of {world_size} ranks.")
    chunk = -(-rows // world_size)
    first = min(rank * chunk, rows)
    return first, min(chunk, rows - first)


def load_local_shards(model, checkpoint, rank: int, world_size: int) -> int:
    """Copy into each (sharded) parameter of ``model`` only this rank's rows from a safetensors file.

    ``safe_open(...).get_slice(name)[first:last]`` reads just those rows, so no rank ever holds a
    full weight. Parameters that are not DTensors (an unsharded model) get the whole tensor.
    Returns the bytes copied in.
    """
    import torch
    from safetensors import safe_open
    from torch.distributed.tensor import DTensor, Shard

    copied = 0
    with safe_open(str(checkpoint), framework="pt", device="cpu") as stored, torch.no_grad():
        names = set(stored.keys())
        for name, parameter in model.named_parameters():  # tied weights appear once
            if name not in names:
                raise KeyError(f"{name} is not in {checkpoint}; the checkpoint does not match the model.")
            if isinstance(parameter, DTensor):
                if tuple(parameter.placements) != (Shard(0),):
                    raise ValueError(f"{name}: expected FSDP's Shard(0) placement, got {parameter.placements}.")
                local = parameter.to_local()
                first, count = shard_rows(parameter.shape[0], rank, world_size)
                if local.shape[0] != count:
                    raise ValueError(f"{name}: rank {rank} holds {local.shape[0]} rows, expected {count}.")
                if count:
                    local.copy_(stored.get_slice(name)[first: first + count])
            else:
                local = parameter
                local.copy_(stored.get_tensor(name))
            copied += local.numel() * local.element_size()
    return copied


def restore_rotary_buffers(model, device) -> None:
    """Recompute the rotary-embedding buffers that ``to_empty`` left uninitialised.

    The buffers are not in the checkpoint (they are computed from the config), so a model built on
    the meta device must recompute them; any other buffer would need its own rule, so it is an error.
    """
    import torch

    rotary = model.model.rotary_emb
    fresh = type(rotary)(config=model.config).to(device)
    others = [name for name, _ in model.named_buffers() if not name.startswith("model.rotary_emb.")]
    if others:
        raise ValueError(f"Buffers {others} have no initialisation rule after to_empty.")
    with torch.no_grad():
        for name, buffer in fresh.named_buffers():
            getattr(rotary, name).copy_(buffer)


def sharded_model_from_checkpoint(source: str, mesh, device: str):
    """Build the model on the meta device, ``fully_shard`` it, then give each rank only its own rows.

    Returns ``(model, checkpoint path)``. The full model never exists on any rank: on ``meta`` the
    parameters have shapes but no storage, ``fully_shard`` turns them into sharded DTensors,
    ``to_empty`` allocates just the local shards, and :func:`load_local_shards` fills them.
    """
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import cached_file

    config = AutoConfig.from_pretrained(source)
    checkpoint = cached_file(source, "model.safetensors")  # a local folder, or the hub cache on Colab
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)  # each decoder layer is all-gathered just before it runs
    fully_shard(model, mesh=mesh)  # the rest: embeddings (tied with the LM head) and the final norm
    model.to_empty(device=device)
    load_local_shards(model, checkpoint, dist.get_rank(), dist.get_world_size())
    restore_rotary_buffers(model, device)
    return model, checkpoint


#: Tracker categories that are model state (weights, gradients, optimizer state and FSDP's
#: gathered copies and communication buffers); the rest are activations, temporaries and inputs.
MODEL_STATE_KINDS = ("Parameter", "Sharded Param", "Unsharded Param", "All Gather", "Buffer", "Gradient",
                     "Sharded Grad", "Unsharded Grad", "Reduce Scatter", "Optstate", "OptState")


def model_state_bytes(snapshot: dict) -> int:
    """Sum of the model-state categories (:data:`MODEL_STATE_KINDS`) of one device's tracker snapshot."""
    return sum(value for kind, value in snapshot.items() if str(getattr(kind, "value", kind)) in MODEL_STATE_KINDS)


def memory_tracker(model, optimizer, sharded: bool, device: str):
    """A PyTorch memory tracker that also keeps the peak of the *model state* on ``device``.

    ``torch.distributed._tools``' ``MemTracker`` (plain model) or ``FSDPMemTracker`` (FSDP2) is a
    ``TorchDispatchMode``: it sees every tensor storage created or freed by any operation, including
    FSDP's all-gathered layers and its reduce-scatter buffers, and files it under a category. Its own
    peak is the peak of everything (activations included); ``model_state_peak`` /
    ``model_state_at_peak`` add the peak of :data:`MODEL_STATE_KINDS` and the categories at that moment.
    """
    import torch
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
    from torch.distributed._tools.mem_tracker import MemTracker

    target = str(torch.device(device))

    class ModelStateTracker(FSDPMemTracker if sharded else MemTracker):
        model_state_peak = 0
        model_state_at_peak: dict = {}

        def _update_peak_stats(self, peak_state):
            super()._update_peak_stats(peak_state)
            for snapshot_device, snapshot in self._curr_mem_snap.items():
                current = model_state_bytes(snapshot) if str(snapshot_device) == target else 0
                if current > self.model_state_peak:
                    self.model_state_peak = current
                    self.model_state_at_peak = plain_snapshot(snapshot)

    if sharded:
        return ModelStateTracker(model, optimizer)
    tracker = ModelStateTracker()
    tracker.track_external(model, optimizer)
    return tracker


def plain_snapshot(snapshot: dict) -> dict:
    """A tracker snapshot with string keys (``{"Parameter": bytes, ..., "Total": bytes}``)."""
    return {str(getattr(kind, "value", kind)): int(value) for kind, value in snapshot.items()}


def process_memory() -> dict:
    """This process's resident set size now and its peak so far, in bytes (Linux ``ru_maxrss`` is in kB)."""
    import resource
    import sys as system

    import psutil

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rss": psutil.Process().memory_info().rss, "max_rss": peak if system.platform == "darwin" else peak * 1024}


def held_dtypes(model, optimizer) -> dict:
    """The dtypes this rank keeps: ``{"parameters", "gradients", "optimizer state"}`` (sorted, joined by +)."""
    import torch

    parameters = list({id(p): p for p in model.parameters()}.values())

    def names(tensors):
        return "+".join(sorted({str(t.dtype).replace("torch.", "") for t in tensors})) or "none"

    state = [value for entry in optimizer.state.values() for key, value in entry.items()
             if isinstance(value, torch.Tensor) and key != "step"]
    return {"parameters": names(parameters), "gradients": names(p.grad for p in parameters if p.grad is not None),
            "optimizer state": names(state)}


def train(args, log: RankLog, device: str = "cpu") -> dict:
    import torch
    import torch.distributed as dist

    from .config import seed_everything
    from .models import load_llm, resolve_llm

    rank, world_size = dist.get_rank(), dist.get_world_size()
    if args.global_batch % world_size:
        raise ValueError(f"--global-batch {args.global_batch} must be divisible by the {world_size} ranks.")
    per_rank = args.global_batch // world_size
    seed_everything(args.seed)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_llm())
    rss_before_init = process_memory()
    if args.no_shard:
        model, _ = load_llm(device=device)
        mode = "single process" if world_size == 1 else "DDP"
        if world_size > 1:
            model = torch.nn.parallel.DistributedDataParallel(model)
    else:
        from torch.distributed.device_mesh import init_device_mesh

        # An explicit mesh: by default FSDP2 builds a CUDA mesh whenever CUDA exists, even for a CPU run.
        mesh = init_device_mesh(torch.device(device).type, (world_size,))
        model, _ = sharded_model_from_checkpoint(resolve_llm(), mesh, device)
        mode = "FSDP2"
    rss_after_init = process_memory()
    model.train()
    log(f"mode {mode} on {device}, world size {world_size}, torch threads {torch.get_num_threads()}, "
        f"{per_rank} sequences of {args.seq_len} tokens per rank per step; "
        f"initialisation added {(rss_after_init['rss'] - rss_before_init['rss']) / 1e6:.0f} MB of RSS")

    blocks = ticket_blocks(tokenizer, args.distinct_batches * args.global_batch, args.seq_len, args.seed).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    losses, step_seconds, held, tracked = [], [], {}, []

    def train_step(step: int):
        first = (step % args.distinct_batches) * args.global_batch + rank * per_rank
        batch = blocks[first: first + per_rank]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        # gradients still present; Adam state from earlier steps
        gradients_held = {**held_bytes(model, optimizer), "dtypes": held_dtypes(model, optimizer)}
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        global_loss = loss.detach().clone()
        dist.all_reduce(global_loss)  # mean over ranks = mean over the global batch (equal tokens per rank)
        return global_loss.item() / world_size, gradients_held

    for step in range(args.steps):
        start = time.perf_counter()
        loss, held = train_step(step)
        losses.append(loss)
        step_seconds.append(time.perf_counter() - start)
        log(f"step {step + 1}/{args.steps}: loss {losses[-1]:.4f} ({step_seconds[-1]:.2f} s)")
    held["optimizer_bytes"] = held_bytes(model, optimizer)["optimizer_bytes"]  # state exists after the last step
    # Extra steps under the memory tracker (it slows them down, so they are neither timed nor in the loss curve).
    for extra in range(args.memory_steps):
        with memory_tracker(model, optimizer, sharded=not args.no_shard, device=device) as tracker:
            train_step(args.steps + extra)
        peak_total = plain_snapshot(tracker.get_tracker_snapshot("peak").get(torch.device(device), {}))
        tracked.append({"model_state_peak": tracker.model_state_peak,
                        "model_state_at_peak": tracker.model_state_at_peak,
                        "total_peak": peak_total.get("Total", 0), "total_at_peak": peak_total})
        log(f"tracked step {extra + 1}/{args.memory_steps}: peak model state {tracker.model_state_peak / 1e6:.1f} MB, "
            f"peak of all tracked tensors {peak_total.get('Total', 0) / 1e6:.1f} MB")
    memory = {"tracked_steps": tracked,
              "rss_before_init": rss_before_init["rss"], "rss_after_init": rss_after_init["rss"],
              **{f"end_{key}": value for key, value in process_memory().items()}}
    return {"rank": rank, **held, "losses": losses, "step_seconds": step_seconds, "mode": mode, "device": device,
            "memory": memory}


def main(argv=None) -> int:
    args = parse_args(argv)  # before importing torch, so a bad argument fails fast

    import torch
    import torch.distributed as dist

    out = Path(args.out)
    rank = int(os.environ.get("RANK", "0"))
    log = RankLog(Path(args.log_dir) if args.log_dir else out.parent, rank)
    started = time.perf_counter()
    try:
        backend, device_type = backend_for_this_machine(args.device)
        device = "cpu"
        if device_type == "cuda":
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local_rank)
            device = f"cuda:{local_rank}"
        log(f"backend {backend} on {device}")
        dist.init_process_group(backend, timeout=timedelta(seconds=args.timeout_s))
        result = train(args, log, device)
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, result)
        if rank == 0:
            report = {
                "mode": result["mode"], "backend": dist.get_backend(), "device": result["device"],
                "world_size": dist.get_world_size(), "steps": args.steps,
                "global_batch": args.global_batch, "seq_len": args.seq_len, "lr": args.lr,
                "full_param_bytes": result["full_param_bytes"], "losses": result["losses"],
                "ranks": [{key: entry[key] for key in ("rank", "param_bytes", "grad_bytes", "optimizer_bytes",
                                                       "dtypes", "memory")}
                          for entry in gathered],
                "step_seconds": result["step_seconds"], "seconds": time.perf_counter() - started,
            }
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(report, indent=2), encoding="utf-8")
            tmp.replace(out)
            log(f"report written to {out}")
        dist.barrier()
        dist.destroy_process_group()
        return 0
    except Exception:
        log("FAILED:\n" + traceback.format_exc())
        raise


if __name__ == "__main__":
    sys.exit(main())
