"""Unit tests of helpers.sharding (memory arithmetic, FSDP byte accounting) and the FSDP launcher."""

import pytest

from helpers import sharding
from helpers.exercises import nb07
from helpers.fsdp_train import (backend_for_this_machine, load_local_shards, memory_tracker, model_state_bytes,
                                shard_rows, sharded_model_from_checkpoint)


def test_weight_bytes_kept_from_notebook_00():
    assert sharding.weight_bytes(175e9, "fp32") == 700e9
    assert dict(sharding.weight_table(10))["int4"] == 5


def test_sixteen_bytes_per_parameter_in_both_precisions():
    for precision in ("fp32", "mixed"):
        assert sharding.training_bytes_per_rank(1, precision=precision)["total"] == 16
    assert sharding.training_bytes_per_rank(1, precision="fp32") == {
        "weights": 4, "gradients": 4, "optimizer": 8, "total": 16}
    assert sharding.training_bytes_per_rank(1, precision="mixed") == {
        "weights": 2, "gradients": 2, "optimizer": 12, "total": 16}


@pytest.mark.parametrize("strategy, expected_gb", [
    # ZeRO paper, Figure 1: 7.5 B parameters, 64 GPUs, mixed-precision Adam (K = 12).
    ("ddp", 120.0),     # (2 + 2 + 12) x 7.5
    ("zero1", 31.41),   # 4 x 7.5 + 12 x 7.5 / 64 = 30 + 1.406
    ("zero2", 16.64),   # 2 x 7.5 + 14 x 7.5 / 64 = 15 + 1.641
    ("zero3", 1.875),   # 16 x 7.5 / 64
    ("fsdp", 1.875),
])
def test_zero_paper_figure_1(strategy, expected_gb):
    total = sharding.training_bytes_per_rank(7.5e9, ranks=64, strategy=strategy, precision="mixed")["total"]
    assert total / 1e9 == pytest.approx(expected_gb, abs=0.01)


def test_zero2_splits_gradients_and_optimizer_only():
    row = sharding.training_bytes_per_rank(100, ranks=4, strategy="zero2", precision="fp32")
    assert row == {"weights": 400, "gradients": 100, "optimizer": 200, "total": 700}


def test_memory_table_rows_in_order():
    rows = sharding.training_memory_table(1e9, ranks=8)
    assert [row["strategy"] for row in rows] == ["ddp", "zero1", "zero2", "zero3"]
    assert [row["total"] for row in rows] == sorted((row["total"] for row in rows), reverse=True)


def test_accelerators_needed_for_gpt3():
    # 175 B x 16 B = 2.8 TB of training state; 2.8 TB / 80 GB = 35 ranks with ZeRO-3.
    assert sharding.accelerators_needed(175e9, 80e9, "zero3") == 35
    # Weights alone in fp32 (700 GB) need 9 devices; with DDP the state never fits.
    assert sharding.accelerators_needed(175e9, 80e9, "ddp") is None
    assert sharding.accelerators_needed(1e9, 80e9, "ddp") == 1
    # ZeRO-1 keeps 4 B/param of weights + gradients on every rank: 700 GB > 80 GB, never fits.
    assert sharding.accelerators_needed(175e9, 80e9, "zero1") is None


@pytest.mark.parametrize("kwargs, message", [
    ({"precision": "fp8"}, "precision"),
    ({"strategy": "zero4"}, "strategy"),
    ({"ranks": 0}, "ranks"),
    ({"ranks": 2.5}, "ranks"),
])
def test_bad_input_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sharding.training_bytes_per_rank(1e9, **kwargs)


def test_format_bytes():
    assert sharding.format_bytes(700e9) == "700 GB"
    assert sharding.format_bytes(1.875e9) == "1.88 GB"
    assert sharding.format_bytes(12) == "12 B"


def test_held_bytes_counts_local_shards_with_one_rank():
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from transformers import LlamaConfig, LlamaForCausalLM

    from helpers.fsdp_train import held_bytes, local_bytes

    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=128, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    full = sum(p.numel() * 4 for p in model.parameters())
    started_here = not dist.is_initialized()
    if started_here:
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:0", rank=0, world_size=1)
    try:
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        batch = torch.randint(0, 128, (2, 8))
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        held = held_bytes(model, optimizer)
        assert held["full_param_bytes"] == full
        assert held["param_bytes"] == held["grad_bytes"] == full  # one rank holds every shard
        steps = 4 * sum(1 for _ in model.parameters())  # Adam keeps a scalar step tensor per parameter
        assert held["optimizer_bytes"] == 2 * full + steps
        assert local_bytes(torch.zeros(3, dtype=torch.float16)) == 6
    finally:
        if started_here:
            dist.destroy_process_group()


def test_launcher_reports_rank_logs_on_failure(tmp_path):
    with pytest.raises(sharding.FSDPRunError, match="exit code") as failure:
        sharding.run_fsdp_training(world_size=1, steps=1, out_dir=tmp_path, timeout_s=120,
                                   extra_args=("--no-such-option",))
    assert "rank 0 log" in str(failure.value) and "torchrun output" in str(failure.value)


def test_launcher_rejects_bad_sizes():
    with pytest.raises(ValueError):
        sharding.run_fsdp_training(world_size=0)


# --- exercise checks ---------------------------------------------------------------------

def test_exercise_checks():
    assert nb07.check_07_1(sharding.training_bytes_per_rank(13e9, 8, "zero2")["total"]) is True
    assert nb07.check_07_1(13e9 * 16) is False
    assert nb07.check_07_2(14) is True
    assert nb07.check_07_2(4) is False
    assert nb07.check_07_3(0.25) is True
    assert nb07.check_07_3(0.5) is False
    assert nb07.check_07_1(None) is False


# --- meta-device initialisation, measured memory, backend choice ---------------------------------

def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=131, tie_word_embeddings=True)
    return LlamaForCausalLM(config)


class _OneRankGroup:
    """A one-process gloo group for tests that need torch.distributed (left alone if one exists)."""

    def __enter__(self):
        import torch.distributed as dist

        self.started = not dist.is_initialized()
        if self.started:
            dist.init_process_group("gloo", init_method="tcp://127.0.0.1:0", rank=0, world_size=1)
        return self

    def __exit__(self, *exc):
        import torch.distributed as dist

        if self.started:
            dist.destroy_process_group()


@pytest.mark.parametrize("rows, world_size", [(576, 2), (131, 2), (131, 4), (3, 4), (10, 3)])
def test_shard_rows_follow_torch_chunk(rows, world_size):
    import torch

    chunks = torch.arange(rows).chunk(world_size)
    for rank in range(world_size):
        first, count = shard_rows(rows, rank, world_size)
        expected = chunks[rank].tolist() if rank < len(chunks) else []
        assert list(range(first, first + count)) == expected
    with pytest.raises(ValueError):
        shard_rows(10, 2, 2)


def test_meta_init_loads_the_checkpoint_exactly(tmp_path):
    import torch
    from torch.distributed.device_mesh import init_device_mesh

    torch.manual_seed(0)
    reference = _tiny_llama().eval()
    reference.save_pretrained(tmp_path)  # safetensors; the tied LM head is stored once
    batch = torch.randint(0, 131, (2, 7))
    with _OneRankGroup(), torch.no_grad():
        mesh = init_device_mesh("cpu", (1,))
        model, checkpoint = sharded_model_from_checkpoint(str(tmp_path), mesh, "cpu")
        model.eval()
        assert str(checkpoint).endswith("model.safetensors")
        assert not any(p.is_meta for p in model.parameters()) and not any(b.is_meta for b in model.buffers())
        torch.testing.assert_close(model(input_ids=batch).logits, reference(input_ids=batch).logits)


def test_load_local_shards_rejects_a_mismatched_checkpoint(tmp_path):
    from safetensors.torch import save_file

    model = _tiny_llama()
    embeddings_only = {"model.embed_tokens.weight": model.model.embed_tokens.weight.detach().clone()}
    save_file(embeddings_only, tmp_path / "x.safetensors")
    with pytest.raises(KeyError, match="not in"):
        load_local_shards(model, tmp_path / "x.safetensors", rank=0, world_size=1)


def test_memory_tracker_sees_weights_gradients_and_adam_state():
    import torch

    torch.manual_seed(0)
    model = _tiny_llama()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = torch.randint(0, 131, (2, 8))

    def step():
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # creates Adam's state
    with memory_tracker(model, optimizer, sharded=False, device="cpu") as tracker:
        step()
    weights = sum(p.numel() * 4 for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    adam = 2 * weights + 4 * sum(1 for _ in model.parameters())  # momentum, variance, a scalar step each
    parts = sharding.memory_parts(tracker.model_state_at_peak)
    # At the optimizer step all three exist at once: 4 + 4 + 8 bytes per parameter (+ buffers, step counters),
    # plus the temporaries AdamW's update allocates while it runs (filed as optimizer state, less than the weights).
    assert parts["parameters kept"] == weights + buffers and parts["gradients kept"] == weights
    assert adam <= parts["optimizer state"] < adam + weights
    assert tracker.model_state_peak == weights + buffers + weights + parts["optimizer state"]
    assert model_state_bytes({"Activation": 5, "Temp": 7, "Parameter": 3}) == 3


def test_fsdp_memory_tracker_counts_the_gathered_copy():
    import torch
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    with _OneRankGroup():
        model = _tiny_llama()
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        batch = torch.randint(0, 131, (2, 8))
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with memory_tracker(model, optimizer, sharded=True, device="cpu") as tracker:
            model(input_ids=batch, labels=batch).loss.backward()
    parts = sharding.memory_parts(tracker.model_state_at_peak)
    weights = sum(p.numel() * 4 for p in model.parameters())
    assert parts["parameters gathered"] > 0  # FSDP all-gathers even on one rank; the tracker must see it
    assert parts["parameters kept"] >= weights and parts["optimizer state"] >= 2 * weights


def _fake_report(peaks_by_rank):
    ranks = []
    for rank, peaks in enumerate(peaks_by_rank):
        steps = [{"model_state_peak": peak, "model_state_at_peak": {"Sharded Param": peak - 10, "Unsharded Grad": 10},
                  "total_peak": peak + 100} for peak in peaks]
        ranks.append({"rank": rank, "memory": {"tracked_steps": steps, "rss_before_init": 1000,
                                               "rss_after_init": 1600, "end_max_rss": 5000}})
    return {"ranks": ranks}


def test_measured_memory_keeps_each_ranks_worst_step():
    rows = sharding.measured_memory(_fake_report([[50, 70], [60, 40]]))
    assert [row["model_state_peak"] for row in rows] == [70, 60]
    assert rows[0]["parts"]["parameters kept"] == 60 and rows[0]["parts"]["gradients unsharded + reduce-scatter"] == 10
    assert rows[0]["total_peak"] == 170 and rows[1]["steps"] == [60, 40] and rows[0]["init_rss"] == 600
    with pytest.raises(ValueError, match="tracked steps"):
        sharding.measured_memory(_fake_report([[]]))


def test_stacked_bar_chart_stacks_parts():
    from helpers import plots

    figure = plots.stacked_bar_chart(["a", "b"], {"x": [1, 2], "y": [3, 4]}, "t", "GB")
    bars = figure.axes[0].patches
    assert len(bars) == 4
    assert [bar.get_y() for bar in bars[2:]] == [1, 2]  # the second part sits on the first
    with pytest.raises(ValueError):
        plots.stacked_bar_chart(["a", "b"], {"x": [1]}, "t", "GB")


@pytest.mark.parametrize("cuda, gpus, local_ranks, expected", [
    (True, 8, "8", ("nccl", "cuda")),   # a node of the 2 x 8 GPU job: NCCL on its own GPU per rank
    (True, 1, "2", ("gloo", "cpu")),    # two ranks cannot share one GPU under NCCL
    (False, 0, "2", ("gloo", "cpu")),   # this workbook's laptop case
])
def test_backend_follows_the_hardware(monkeypatch, cuda, gpus, local_ranks, expected):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert backend_for_this_machine("auto", {"LOCAL_WORLD_SIZE": local_ranks, "WORLD_SIZE": "16"}) == expected
