"""Train the workbook's LLM for a few steps with PyTorch FSDP2, one process per rank.

Launch with torchrun (notebook 07 does it through :func:`helpers.sharding.run_fsdp_training`)::

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m helpers.fsdp_train --steps 8 --out report.json

Every rank loads the model, ``fully_shard`` splits each decoder layer and then the
root module (embeddings, final norm, tied LM head) across the ranks, and AdamW
trains on packed blocks of support-ticket text; each rank reads its own slice of
every global batch. At the end each rank measures the bytes it *holds* — its
local shards of the parameters, gradients and Adam state — and rank 0 writes all
of it, with the loss curve, to the JSON report.

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


def train(args, log: RankLog, device: str = "cpu") -> dict:
    import torch
    import torch.distributed as dist

    from .config import seed_everything
    from .models import load_llm

    rank, world_size = dist.get_rank(), dist.get_world_size()
    if args.global_batch % world_size:
        raise ValueError(f"--global-batch {args.global_batch} must be divisible by the {world_size} ranks.")
    per_rank = args.global_batch // world_size
    seed_everything(args.seed)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))

    model, tokenizer = load_llm(device=device)
    model.train()
    log(f"loaded {type(model).__name__} on {device}; torch threads {torch.get_num_threads()}")
    if args.no_shard:
        mode = "single process" if world_size == 1 else "DDP"
        if world_size > 1:
            model = torch.nn.parallel.DistributedDataParallel(model)
    else:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        # An explicit mesh: by default FSDP2 builds a CUDA mesh whenever CUDA exists, even for a CPU run.
        mesh = init_device_mesh(torch.device(device).type, (world_size,))
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)  # each decoder layer is all-gathered just before it runs
        fully_shard(model, mesh=mesh)  # the rest: embeddings (tied with the LM head) and the final norm
        mode = "FSDP2"
    log(f"mode {mode}, world size {world_size}, {per_rank} sequences of {args.seq_len} tokens per rank per step")

    blocks = ticket_blocks(tokenizer, args.distinct_batches * args.global_batch, args.seq_len, args.seed).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    losses, step_seconds, held = [], [], {}
    for step in range(args.steps):
        start = time.perf_counter()
        first = (step % args.distinct_batches) * args.global_batch + rank * per_rank
        batch = blocks[first: first + per_rank]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        if step == args.steps - 1:
            held = held_bytes(model, optimizer)  # gradients still present; Adam state created at step 0
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        global_loss = loss.detach().clone()
        dist.all_reduce(global_loss)  # mean over ranks = mean over the global batch (equal tokens per rank)
        losses.append(global_loss.item() / world_size)
        step_seconds.append(time.perf_counter() - start)
        log(f"step {step + 1}/{args.steps}: loss {losses[-1]:.4f} ({step_seconds[-1]:.2f} s)")
    held["optimizer_bytes"] = held_bytes(model, optimizer)["optimizer_bytes"]  # state exists after the last step
    return {"rank": rank, **held, "losses": losses, "step_seconds": step_seconds, "mode": mode, "device": device}


def main(argv=None) -> int:
    args = parse_args(argv)  # before importing torch, so a bad argument fails fast

    import torch
    import torch.distributed as dist

    out = Path(args.out)
    rank = int(os.environ.get("RANK", "0"))
    log = RankLog(Path(args.log_dir) if args.log_dir else out.parent, rank)
    started = time.perf_counter()
    try:
        backend, device_type = choose_backend(args.device, torch.cuda.is_available(), torch.cuda.device_count(),
                                              ranks_on_this_machine(os.environ))
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
                "ranks": [{key: entry[key] for key in ("rank", "param_bytes", "grad_bytes", "optimizer_bytes")}
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
