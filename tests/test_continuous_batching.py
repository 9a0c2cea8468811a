"""Unit tests of helpers.continuous_batching on a tiny random Llama (float32, eager attention)."""

import pytest

from helpers import config
from helpers import continuous_batching as cb
from helpers.continuous_batching import Request


@pytest.fixture(scope="module")
def model():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    settings = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=256, max_position_embeddings=256,
                           pad_token_id=0, bos_token_id=1, eos_token_id=2, attn_implementation="eager",
                           initializer_range=0.3)  # sharp attention: a wrong position or mask changes tokens
    return LlamaForCausalLM(settings).eval()


def prompts(count, seed=0):
    import random

    generator = random.Random(seed)
    return [[generator.randrange(3, 256) for _ in range(generator.randrange(3, 12))] for _ in range(count)]


def assert_matches_unbatched(model, result, requests):
    by_index = {request.index: request for request in requests}
    for item in result.completed:
        request = by_index[item.index]
        assert item.tokens == cb.greedy_reference(model, request.prompt_ids, request.max_new_tokens), item.index


def test_request_joins_mid_batch_and_finished_one_leaves_at_once(model):
    ids = prompts(3)
    requests = [Request(0, 0.0, tuple(ids[0]), 10), Request(1, 0.0, tuple(ids[1]), 3),
                Request(2, 2.5, tuple(ids[2]), 6)]  # arrives while 0 and 1 are decoding
    result = cb.continuous_batching(model, requests, batch_size=2, step_cost_s=1.0)
    done = {item.index: item for item in result.completed}
    # request 1 produced tokens at steps 0, 1, 2 and left right after step 2
    assert (done[1].first_step, done[1].last_step) == (0, 2)
    assert result.timeline[2] == [0, 1] and result.timeline[3][1] != 1
    # request 2 arrived at t=2.5 while both slots were full; it took the freed slot at step 3
    assert done[2].first_step == 3 and result.timeline[3] == [0, 2]
    assert done[2].first_token_s > done[2].arrival_s
    # after the batch shrank and grew again, every output still equals its unbatched decode
    assert_matches_unbatched(model, result, requests)
    assert [len(item.tokens) for item in result.completed] == [10, 3, 6]


def test_all_schedulers_equal_unbatched_greedy_and_lose_nothing(model):
    requests = cb.request_stream(prompts(5, seed=1), count=9, rate_per_s=0.5, output_lengths=[2, 5, 9, 14], seed=3)
    for result in (cb.continuous_batching(model, requests, batch_size=3, step_cost_s=1.0),
                   cb.static_batching(model, requests, batch_size=3, step_cost_s=1.0),
                   cb.dynamic_batching(model, requests, batch_size=3, max_wait_ms=2000, step_cost_s=1.0)):
        assert [item.index for item in result.completed] == list(range(9)), result.name  # none lost or duplicated
        held = [index for slots in result.timeline for index in slots if index is not None]
        assert set(held) == set(range(9)), result.name
        assert all(slots.count(index) == 1 for slots in result.timeline for index in slots if index is not None)
        assert_matches_unbatched(model, result, requests)
        assert all(item.finish_s >= item.first_token_s > item.arrival_s for item in result.completed)


def test_eos_stops_a_request_like_generate_does(model):
    ids = prompts(4, seed=2)
    # the first greedy token of prompt 0 plays the end-of-sequence token: that request stops after one token
    stop = cb.greedy_reference(model, ids[0], 1)[0]
    requests = [Request(i, 0.0, tuple(prompt), 8) for i, prompt in enumerate(ids)]
    result = cb.continuous_batching(model, requests, batch_size=4, eos_token_id=stop, step_cost_s=1.0)
    assert result.completed[0].tokens == [stop]
    for item in result.completed:
        assert item.tokens == cb.greedy_reference(model, ids[item.index], 8, eos_token_id=stop)


def test_continuous_keeps_slots_busier_than_static_on_mixed_lengths(model):
    # everything queued at once, lengths 2..20: static waits on each batch's longest member
    lengths = [2, 20, 3, 18, 2, 16, 4, 20]
    requests = [Request(i, 0.0, (5 + i, 7, 9), n) for i, n in enumerate(lengths)]
    static = cb.static_batching(model, requests, batch_size=4, step_cost_s=1.0)
    continuous = cb.continuous_batching(model, requests, batch_size=4, step_cost_s=1.0)
    assert static.useful_tokens == continuous.useful_tokens == sum(lengths)
    assert static.steps == 20 + 20  # two batches, each as long as its longest member
    assert static.slot_utilization == pytest.approx(sum(lengths) / (4 * 40))
    assert continuous.steps < static.steps
    assert continuous.slot_utilization > static.slot_utilization + 0.2
    assert continuous.metrics()["latency_p95_s"] <= static.metrics()["latency_p95_s"]


def test_static_batch_waits_to_fill_and_dynamic_leaves_after_max_wait(model):
    requests = [Request(i, float(t), (4, 5, 6), 2) for i, t in enumerate([0, 1, 2, 10])]
    static = cb.static_batching(model, requests, batch_size=3, step_cost_s=1.0)
    dynamic = cb.dynamic_batching(model, requests, batch_size=3, max_wait_ms=500, step_cost_s=1.0)
    assert static.completed[0].first_token_s == pytest.approx(2.0 + 1.0)  # waited for request 2
    assert static.completed[3].first_token_s == pytest.approx(10.0 + 1.0)  # last, smaller batch
    assert dynamic.completed[0].first_token_s == pytest.approx(0.5 + 1.0)  # left alone after 500 ms


def test_request_stream_is_seeded_and_draws_lengths_from_the_list():
    first = cb.request_stream([[1, 2], [3]], count=20, rate_per_s=2.0, output_lengths=[8, 32, 96], seed=7)
    again = cb.request_stream([[1, 2], [3]], count=20, rate_per_s=2.0, output_lengths=[8, 32, 96], seed=7)
    assert first == again
    assert {request.max_new_tokens for request in first} <= {8, 32, 96}
    assert len({request.max_new_tokens for request in first}) > 1
    assert [request.arrival_s for request in first] == sorted(request.arrival_s for request in first)
    assert first[1].prompt_ids == (3,)


def test_stream_sizes_come_from_the_profile():
    assert cb.stream_sizes()["batch_size"] == config.profile().continuous_batch_size
    assert config.profile("full").continuous_requests > config.profile("quick").continuous_requests
