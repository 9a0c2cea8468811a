"""Unit tests of helpers.sharding (memory arithmetic, FSDP byte accounting) and the FSDP launcher."""

import pytest

from helpers import sharding
from helpers.exercises import nb07


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
