"""Unit tests of helpers.batching: the dynamic batcher's grouping on a virtual clock, with fake models."""

import pytest

from helpers import batching
from helpers.batching import DynamicBatcher, simulate_server
from helpers.exercises import nb08


class FakeModel:
    """Records the batches it is given; a batch takes 1 s plus 0.1 s per request."""

    def __init__(self):
        self.batches = []

    def __call__(self, indices):
        self.batches.append(list(indices))
        return 1.0 + 0.1 * len(indices)


def test_no_batching_serves_one_at_a_time_in_order():
    model = FakeModel()
    served = simulate_server([0.0, 0.1, 0.2], model)
    assert model.batches == [[0], [1], [2]]
    assert [item.start_s for item in served] == pytest.approx([0.0, 1.1, 2.2])
    assert served[-1].latency_s == pytest.approx(3.3 - 0.2)


def test_batch_closes_when_full():
    model = FakeModel()
    simulate_server([0.0, 0.01, 0.02, 0.03, 0.04], model, DynamicBatcher(max_batch=2, max_wait_ms=1000))
    # the first batch leaves when its second request arrives; the rest queued while it ran
    assert model.batches == [[0, 1], [2, 3], [4]]


def test_batch_closes_after_max_wait():
    model = FakeModel()
    served = simulate_server([0.0, 0.05, 0.5], model, DynamicBatcher(max_batch=8, max_wait_ms=100))
    assert model.batches == [[0, 1], [2]]
    assert served[0].start_s == pytest.approx(0.1)  # the oldest waited exactly max_wait
    assert served[2].start_s == pytest.approx(1.3)  # server busy until 0.1 + 1.2


def test_queue_built_up_while_busy_is_dispatched_at_once():
    model = FakeModel()
    served = simulate_server([0.0, 0.2, 0.3, 0.4, 0.5, 0.6], model, DynamicBatcher(max_batch=3, max_wait_ms=0))
    assert model.batches == [[0], [1, 2, 3], [4, 5]]
    assert served[1].start_s == pytest.approx(1.1)  # no extra wait: the oldest has waited long enough


def test_max_batch_one_equals_no_batching():
    arrivals = batching.poisson_arrivals(20, rate_per_s=5, seed=1)
    plain, single = FakeModel(), FakeModel()
    simulate_server(arrivals, plain)
    simulate_server(arrivals, single, DynamicBatcher(max_batch=1, max_wait_ms=500))
    assert plain.batches == single.batches == [[index] for index in range(20)]


def test_every_request_served_once_and_batches_respect_max():
    arrivals = batching.poisson_arrivals(50, rate_per_s=20, seed=3)
    model = FakeModel()
    served = simulate_server(arrivals, model, DynamicBatcher(max_batch=4, max_wait_ms=50))
    assert sorted(item.index for item in served) == list(range(50))
    assert all(1 <= len(batch) <= 4 for batch in model.batches)
    assert all(item.start_s >= item.arrival_s for item in served)


def test_batching_raises_throughput_under_overload():
    arrivals = batching.poisson_arrivals(40, rate_per_s=10, seed=0)  # 10 req/s; unbatched capacity < 1 req/s
    unbatched = batching.server_metrics(simulate_server(arrivals, FakeModel()), tokens_per_request=10)
    batched = batching.server_metrics(simulate_server(arrivals, FakeModel(), DynamicBatcher(8, 100)), 10)
    assert batched["throughput_tokens_per_s"] > 3 * unbatched["throughput_tokens_per_s"]
    assert batched["latency_p95_s"] < unbatched["latency_p95_s"]
    assert unbatched["mean_batch_size"] == 1 and batched["mean_batch_size"] > 1


def test_poisson_arrivals_are_seeded_sorted_and_have_the_right_rate():
    first = batching.poisson_arrivals(2000, rate_per_s=4, seed=7)
    assert first == batching.poisson_arrivals(2000, rate_per_s=4, seed=7)
    assert first == sorted(first)
    assert 2000 / first[-1] == pytest.approx(4, rel=0.1)


def test_server_metrics_by_hand():
    served = [batching.Served(0, 0.0, 0.0, 1.0, 2), batching.Served(1, 0.5, 0.0, 1.0, 2),
              batching.Served(2, 1.0, 1.0, 3.0, 1)]
    metrics = batching.server_metrics(served, tokens_per_request=6)
    assert metrics["throughput_tokens_per_s"] == pytest.approx(18 / 3)
    assert metrics["latency_p50_s"] == pytest.approx(1.0)
    # numpy's percentile (linear interpolation) over the latencies 1.0, 0.5 and 2.0
    assert metrics["latency_p95_s"] == pytest.approx(1.9)
    assert metrics["batches"] == 2 and metrics["mean_batch_size"] == pytest.approx(1.5)


def test_batch_latency_model_interpolates():
    sweep = [{"batch_size": 1, "latency_s": 1.0}, {"batch_size": 4, "latency_s": 2.5},
             {"batch_size": 8, "latency_s": 4.5}]
    latency = batching.batch_latency_model(sweep)
    assert latency(1) == pytest.approx(1.0)
    assert latency(2) == pytest.approx(1.5)
    assert latency(6) == pytest.approx(3.5)
    assert latency(10) == pytest.approx(5.5)  # last segment extended


@pytest.mark.parametrize("kwargs", [{"max_batch": 0}, {"max_batch": 2.0}, {"max_wait_ms": -1}])
def test_bad_batcher_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        DynamicBatcher(**kwargs)


def test_unsorted_arrivals_are_rejected():
    with pytest.raises(ValueError, match="sorted"):
        simulate_server([1.0, 0.5], FakeModel())


def test_static_sweep_needs_enough_prompts():
    with pytest.raises(ValueError, match="prompts"):
        batching.static_batching_sweep(None, None, ["a"], (1, 2), new_tokens=4)


def test_static_sweep_on_tiny_model():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    class Tokenizer:
        """Characters as token ids, left padding; enough of the tokenizer interface for generation."""

        pad_token_id = 0
        chat_template = None
        padding_side = "left"

        def __call__(self, texts, return_tensors="pt", padding=True, add_special_tokens=True):
            width = max(len(text) for text in texts)
            ids = [[0] * (width - len(text)) + [ord(c) % 120 + 1 for c in text] for text in texts]
            mask = [[0] * (width - len(text)) + [1] * len(text) for text in texts]
            return _Batch(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))

        def batch_decode(self, rows, skip_special_tokens=True):
            return ["x" * len(row) for row in rows]

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=128)).eval()
    rows = batching.static_batching_sweep(model, Tokenizer(), ["hello", "hi there", "hey"], (1, 2), new_tokens=3,
                                          repeats=1)
    assert [row["batch_size"] for row in rows] == [1, 2]
    assert all(row["tokens_per_s"] > 0 and row["latency_s"] > 0 for row in rows)


class _Batch(dict):
    def to(self, device):
        return self

    def __getattr__(self, name):
        return self[name]


# --- exercise checks of notebook 08 --------------------------------------------------------

def test_exercise_checks():
    assert nb08.check_08_1(2 * 32 * 32 * 128 * 2) is True
    assert nb08.check_08_1(32 * 32 * 128 * 2) is False
    assert nb08.check_08_2(2 * 32 * 8 * 128 * 2 * 4096 * 16) is True
    assert nb08.check_08_2(2 * 32 * 32 * 128 * 2 * 4096 * 16) is False
    sims, same = [0.95, 0.9, 0.8, 0.85, 0.7], [True, True, True, False, False]
    assert nb08.check_08_3(0.86, sims, same) is True
    assert nb08.check_08_3(0.84, sims, same) is False
    assert nb08.check_08_1(None) is False
    assert nb08.check_08_3("high", sims, same) is False
