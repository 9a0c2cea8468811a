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


class Bigram(torch.nn.Module):
    """Logits depend only on the current token, so every token's loss is known by hand whatever the window."""

    def __init__(self, vocab: int, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=generator) * 3)

    def forward(self, input_ids, labels=None):
        return type("Output", (), {"logits": self.table[input_ids]})


class CharTokenizer:
    """Token i is the character with code i; BOS = 0."""

    bos_token_id, eos_token_id = 0, 1

    def __call__(self, text, add_special_tokens=False, return_tensors=None):
        return type("Encoded", (), {"input_ids": [ord(c) % 50 + 2 for c in text]})


def test_scoring_windows_score_every_target_once_with_context():
    for n_tokens in (1, 2, 3, 7, 8, 9, 25, 64):
        windows = metrics.scoring_windows(n_tokens, max_length=8, stride=3)
        targets = [t for begin, end, first in windows for t in range(first, end)]
        assert targets == list(range(1, n_tokens)), n_tokens
        for begin, end, first in windows:
            assert end - begin <= 8 and begin < first  # at least one token of context
    with pytest.raises(ValueError):
        metrics.scoring_windows(10, max_length=8, stride=8)


def test_perplexity_matches_a_hand_computed_multi_window_case():
    model, tokenizer = Bigram(52), CharTokenizer()
    texts = ["sync conflicts", "a", "trash keeps files for 45 days"]  # a 1-character text included
    log_probs = torch.log_softmax(model.table.detach(), dim=-1)
    by_hand = []
    for text in texts:
        ids = [0] + tokenizer(text).input_ids
        by_hand += [-log_probs[ids[i - 1], ids[i]].item() for i in range(1, len(ids))]
    expected = math.exp(sum(by_hand) / len(by_hand))
    assert len(set(round(v, 3) for v in by_hand)) > 5  # unequal per-token losses
    nlls = metrics.token_nlls(model, tokenizer, texts, max_length=5, stride=2, progress=False)
    assert [len(v) for v in nlls] == [len(t) for t in texts]  # every character scored once, the first too
    assert math.isfinite(metrics.perplexity_from_nlls(nlls))
    assert metrics.perplexity(model, tokenizer, texts, max_length=5, stride=2, progress=False) == \
        pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="No tokens"):
        metrics.perplexity(model, tokenizer, [""], progress=False)


def test_perplexity_ratio_has_a_paired_interval():
    import numpy as np

    rng = np.random.default_rng(0)
    base = rng.gamma(2.0, 1.5, size=600)
    worse = base + 0.1  # every token 0.1 nats worse: ratio exp(0.1)
    result = metrics.perplexity_ratio([base[:300], base[300:]], [base], block_tokens=50)
    assert result["value"] == pytest.approx(1.0)
    result = metrics.perplexity_ratio([worse], [base], block_tokens=50)
    assert result["value"] == pytest.approx(math.exp(0.1)) and result["n"] == 12
    low, high = result["interval"]
    assert low == pytest.approx(math.exp(0.1)) and high == pytest.approx(math.exp(0.1))  # paired: no spread
    noisy = metrics.perplexity_ratio([base + rng.normal(0.1, 0.5, size=600)], [base], block_tokens=50)
    assert noisy["interval"][0] < noisy["value"] < noisy["interval"][1]


def test_perplexity_scores_the_first_token_with_a_real_model(llm_tokenizer, tiny_llama):
    text = "Sync conflicts create a copy named after the device. " * 20
    ids = metrics.document_ids(llm_tokenizer, text)
    assert ids[0] in (llm_tokenizer.bos_token_id, llm_tokenizer.eos_token_id)
    one_window = metrics.perplexity(tiny_llama, llm_tokenizer, [text], max_length=len(ids), stride=len(ids) - 1,
                                    progress=False)
    with torch.no_grad():
        tensor = torch.tensor([ids])
        direct = math.exp(tiny_llama(tensor, labels=tensor).loss.item())
    assert one_window == pytest.approx(direct, rel=1e-4)
    windowed = metrics.perplexity(tiny_llama, llm_tokenizer, [text], max_length=64, stride=32, progress=False)
    assert math.isfinite(windowed) and windowed > 1


def test_wilson_interval_known_values():
    low, high = metrics.wilson_interval(18, 24)
    assert (round(low, 3), round(high, 3)) == (0.551, 0.880)
    assert metrics.wilson_interval(0, 10)[0] == 0.0 and metrics.wilson_interval(10, 10)[1] == 1.0
    with pytest.raises(ValueError):
        metrics.wilson_interval(3, 0)


def test_paired_bootstrap_of_a_difference():
    same = metrics.accuracy_difference([1, 0, 1, 1] * 10, [1, 0, 1, 1] * 10)
    assert same["value"] == 0 and same["interval"] == (0.0, 0.0) and same["n"] == 40
    better = metrics.accuracy_difference([1] * 30 + [0] * 10, [1] * 10 + [0] * 30)
    assert better["value"] == pytest.approx(0.5) and 0.3 < better["interval"][0] < 0.5 < better["interval"][1]
    ratio = metrics.accuracy_ratio([1] * 9 + [0], [1] * 10)
    assert ratio["value"] == pytest.approx(0.9) and ratio["interval"][1] <= 1.0
    with pytest.raises(ValueError):
        metrics.accuracy_difference([1, 0], [1])


def test_speedup_pairs_alternating_rounds():
    slow = metrics.Timing(2.0, 1.0, 3.0, 4, 1.5, 2.5, (1.0, 2.0, 2.0, 3.0))
    fast = metrics.Timing(0.5, 0.25, 0.75, 4, 0.4, 0.6, (0.25, 0.5, 0.5, 0.75))
    result = metrics.speedup(slow, fast)
    assert result["value"] == 4.0 and result["interval"] == (4.0, 4.0) and result["kind"] == "IQR"
    # the value is the median of the per-round ratios, so it always lies inside its own IQR
    drifting = metrics.speedup(metrics.Timing(3, 1, 5, 3, 2, 4, (1.0, 3.0, 5.0)),
                               metrics.Timing(1, 0.5, 5, 3, 0.75, 3, (0.5, 1.0, 5.0)))
    assert drifting["value"] == 2.0 and drifting["interval"][0] <= 2.0 <= drifting["interval"][1]
    with pytest.raises(ValueError, match="same number of rounds"):
        metrics.speedup(slow, metrics.Timing(1, 1, 1, 1, 1, 1, (1.0,)))


def test_measure_alternating_interleaves_variants():
    order = []
    timings = metrics.measure_alternating({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                                          repeats=3, warmup=1)
    assert order == ["a", "b", "a", "b", "a", "b", "a", "b"]
    assert timings["a"].runs == 3 and len(timings["b"].samples) == 3
    assert timings["a"].q1_s <= timings["a"].median_s <= timings["a"].q3_s


def test_samples_to_decide_scales_with_the_square_of_the_gap():
    assert metrics.samples_to_decide(0.20, (0.05, 0.35), 0.15, 24) == 24 * 9
    # the side facing the bound counts (bootstrap intervals are not symmetric), and it is always more than n
    assert metrics.samples_to_decide(0.133, (0.0, 0.30), 0.30, 30) == 31
    assert metrics.samples_to_decide(0.10, (0.0, 0.40), 0.30, 30) == math.ceil(30 * (0.30 / 0.20) ** 2)
    assert metrics.samples_to_decide(0.15, (0.05, 0.25), 0.15, 24) is None


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


@pytest.mark.parametrize("q", [0, 25, 50, 95, 100])
def test_percentile_is_numpys(q):
    import numpy as np

    values = [12.0, 3.0, 7.5, 100.0, 42.0]
    assert metrics.percentile(values, q) == pytest.approx(np.percentile(values, q))
    assert metrics.percentile([1.0, 2.0, 3.0], 95) == pytest.approx(2.9)
    with pytest.raises(ValueError, match="at least one"):
        metrics.percentile([], q)
