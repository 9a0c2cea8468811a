import math

import pytest
import torch

from helpers import metrics


def test_measure_reports_median_and_spread():
    calls = []
    timing = metrics.measure(lambda: calls.append(1), repeats=5, warmup=2)
    assert len(calls) == 7 and timing.runs == 5
    assert timing.min_s <= timing.median_s <= timing.max_s
    with pytest.raises(ValueError):
        metrics.measure(lambda: None, repeats=0)


def test_accuracy_and_its_errors():
    assert metrics.accuracy(["a", "b", "c", "d"], ["a", "x", "c", "d"]) == 0.75
    with pytest.raises(ValueError, match="predictions"):
        metrics.accuracy(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        metrics.accuracy([], [])


def test_recall_at_k():
    ranked = [["d1", "d2", "d3"], ["d3", "d1", "d2"], ["d2", "d3", "d1"]]
    assert metrics.recall_at_k(ranked, ["d1", "d1", "d1"], 1) == pytest.approx(1 / 3)
    assert metrics.recall_at_k(ranked, ["d1", "d1", "d1"], 2) == pytest.approx(2 / 3)
    assert metrics.recall_at_k(ranked, ["d1", "d1", "d1"], 3) == 1.0
    with pytest.raises(ValueError):
        metrics.recall_at_k(ranked, ["d1"], 1)


def test_model_bytes_counts_tied_weights_once_and_halves_in_bf16(tiny_llama):
    distinct = {id(p): p for p in tiny_llama.parameters()}.values()
    expected = sum(p.numel() * 4 for p in distinct) + sum(b.numel() * b.element_size() for b in tiny_llama.buffers())
    assert metrics.model_bytes(tiny_llama) == expected
    params_fp32 = sum(p.numel() * 4 for p in distinct)
    bf16 = tiny_llama.to(torch.bfloat16)
    assert metrics.model_bytes(bf16) == params_fp32 // 2 + sum(b.numel() * b.element_size() for b in bf16.buffers())


def test_model_bytes_counts_packed_4bit_storage_and_scales():
    class FakeState:
        def __init__(self):
            self.absmax = torch.ones(8, dtype=torch.float32)  # 32 bytes of scales
            self.code = torch.ones(16, dtype=torch.float32)  # 64 bytes codebook
            self.state2 = None

    module = torch.nn.Module()
    packed = torch.nn.Parameter(torch.zeros(256, dtype=torch.uint8), requires_grad=False)  # 512 weights
    packed.quant_state = FakeState()
    module.weight = packed
    assert metrics.model_bytes(module) == 256 + 32 + 64


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(llm_tokenizer):
    class Uniform(torch.nn.Module):
        def __init__(self, vocab):
            super().__init__()
            self.vocab = vocab
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, labels):
            logits = torch.zeros(*input_ids.shape, self.vocab)
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, self.vocab),
                                                     labels[:, 1:].reshape(-1), ignore_index=-100)
            return type("Output", (), {"loss": loss})

    vocab = len(llm_tokenizer)
    text = "Lumen Cloud keeps deleted files for a while. " * 30
    value = metrics.perplexity(Uniform(vocab), llm_tokenizer, [text], max_length=64, stride=32, progress=False)
    assert value == pytest.approx(vocab, rel=1e-4)


def test_perplexity_scores_every_token_once(llm_tokenizer, tiny_llama):
    text = "Sync conflicts create a copy named after the device. " * 20
    n_tokens = len(llm_tokenizer(text).input_ids)
    one_window = metrics.perplexity(tiny_llama, llm_tokenizer, [text], max_length=n_tokens, progress=False)
    assert math.isfinite(one_window) and one_window > 1
    # A window covering the whole text equals a plain forward pass.
    ids = llm_tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        direct = math.exp(tiny_llama(ids, labels=ids).loss.item())
    assert one_window == pytest.approx(direct, rel=1e-4)
    with pytest.raises(ValueError):
        metrics.perplexity(tiny_llama, llm_tokenizer, [""], progress=False)


def test_generation_speed_counts_exact_tokens(llm_tokenizer, tiny_llama):
    speed = metrics.generation_speed(tiny_llama, llm_tokenizer, ["hello", "a longer prompt here"],
                                     max_new_tokens=5, batch_size=2, repeats=1, warmup=0)
    assert speed["new_tokens"] == 10 and speed["batch_size"] == 2
    assert speed["tokens_per_s_min"] <= speed["tokens_per_s"] <= speed["tokens_per_s_max"]
    with pytest.raises(ValueError):
        metrics.generation_speed(tiny_llama, llm_tokenizer, [], max_new_tokens=5)


def test_parameter_count_counts_tied_once(tiny_llama):
    assert tiny_llama.lm_head.weight is tiny_llama.model.embed_tokens.weight
    total = sum(p.numel() for p in tiny_llama.parameters())  # .parameters() already dedupes
    assert metrics.parameter_count(tiny_llama) == total
