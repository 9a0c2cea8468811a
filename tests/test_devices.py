"""Device handling that a GPU run depends on, checked on the CPU (``meta`` stands in for another device)."""

import pytest
import torch
from torch import nn
from transformers import BatchEncoding

from helpers import config, distillation, quantization
from helpers.fsdp_train import choose_backend, ranks_on_this_machine


@pytest.mark.parametrize("requested, cuda, gpus, world, expected", [
    ("auto", False, 0, 2, ("gloo", "cpu")),
    ("auto", True, 1, 2, ("gloo", "cpu")),  # two ranks cannot share one GPU under NCCL
    ("auto", True, 2, 2, ("nccl", "cuda")),
    ("auto", True, 1, 1, ("nccl", "cuda")),
    ("cpu", True, 8, 2, ("gloo", "cpu")),
    ("cuda", True, 4, 2, ("nccl", "cuda")),
])
def test_backend_follows_the_gpus(requested, cuda, gpus, world, expected):
    assert choose_backend(requested, cuda, gpus, world) == expected


def test_backend_refuses_cuda_without_enough_gpus():
    with pytest.raises(ValueError, match="one GPU per rank"):
        choose_backend("cuda", True, 1, 2)
    with pytest.raises(ValueError, match="one GPU per rank"):
        choose_backend("cuda", False, 0, 1)
    with pytest.raises(ValueError):
        choose_backend("tpu", False, 0, 1)


def test_gpus_are_counted_per_machine_not_over_all_machines():
    # torchrun --nnodes 2 --nproc_per_node 8: 16 ranks in all, 8 on each machine with its 8 GPUs
    two_nodes = {"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}
    assert ranks_on_this_machine(two_nodes) == 8
    assert choose_backend("auto", True, 8, ranks_on_this_machine(two_nodes)) == ("nccl", "cuda")
    assert ranks_on_this_machine({"WORLD_SIZE": "2"}) == 2 and ranks_on_this_machine({}) == 1


def test_module_device_reads_parameters_then_buffers():
    assert config.module_device(nn.Linear(2, 2, device="meta")).type == "meta"
    assert config.module_device(nn.Linear(2, 2)).type == "cpu"
    holder = nn.Module()
    holder.register_buffer("table", torch.zeros(2, device="meta"))
    assert config.module_device(holder).type == "meta"
    assert config.module_device(nn.ReLU()).type == "cpu"  # nothing to read: the CPU


def test_synchronize_is_a_no_op_without_a_gpu():
    config.synchronize("cpu")
    config.synchronize(torch.device("meta"))
    config.synchronize()


def test_layer_timings_build_inputs_on_each_layers_device():
    # A layer on another device than the CPU would fail on CPU inputs; 'meta' stands in for cuda.
    layers = {"here": nn.Linear(16, 8), "elsewhere": nn.Linear(16, 8, device="meta")}
    timings = quantization.linear_layer_timings(layers, tokens=(1, 4), repeats=1)
    assert set(timings) == {"here", "elsewhere"} and all(ms >= 0 for row in timings.values() for ms in row.values())


def test_compare_speed_feeds_each_model_on_its_own_device():
    seen = []

    class Recorder(nn.Module):
        def __init__(self, device):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(1, device=device))

        def forward(self, input_ids, attention_mask):
            seen.append((self.weight.device.type, input_ids.device.type, attention_mask.device.type))

    def tokenizer(batch, **options):
        return BatchEncoding({"input_ids": torch.ones(len(batch), 3, dtype=torch.long),
                              "attention_mask": torch.ones(len(batch), 3, dtype=torch.long)})

    contenders = {"cpu": (Recorder("cpu"), tokenizer), "meta": (Recorder("meta"), tokenizer)}
    distillation.compare_speed(contenders, ["a", "b", "c"], batch_size=2, rounds=1, repeats=1, progress=False)
    assert seen and all(model == ids == mask for model, ids, mask in seen)
    assert {model for model, _, _ in seen} == {"cpu", "meta"}


def test_dynamic_int8_copy_lives_on_the_cpu():
    model = nn.Module()
    model.layers = nn.ModuleList([nn.Module()])
    model.layers[0].proj = nn.Linear(8, 8)
    quantized = quantization.dynamic_int8(model)
    assert type(quantized.layers[0].proj).__module__.startswith("torch.ao")
    assert config.module_device(quantized).type == "cpu"
    assert isinstance(model.layers[0].proj, nn.Linear)  # the original is left as it was
    out = quantized.layers[0].proj(torch.randn(2, 8))
    assert out.shape == (2, 8)
