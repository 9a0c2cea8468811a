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


def test_answer_lengths_count_tokens_and_clip():
    class Tokenizer:
        def __call__(self, text, add_special_tokens=False):
            class Encoded:
                input_ids = text.split()
            return Encoded()

    assert cb.answer_lengths(Tokenizer(), ["a b c", "a " * 12, "a " * 200], low=4, high=96) == [4, 12, 96]


def test_first_divergence_finds_the_step_and_reports_the_unbatched_logit_gap(model):
    import torch

    ids = prompts(1, seed=5)[0]
    expected = cb.greedy_reference(model, ids, 6)
    assert cb.first_divergence(model, ids, expected, expected) is None
    assert cb.first_divergence(model, ids, expected, expected[:3]) is None  # a prefix is not a divergence
    changed = expected[:4] + [(expected[4] + 1) % 256] + expected[5:]
    where = cb.first_divergence(model, ids, expected, changed)
    assert (where["step"], where["expected"], where["got"]) == (4, expected[4], changed[4])
    with torch.no_grad():
        logits = model(torch.tensor([list(ids) + expected[:4]])).logits[0, -1]
    top = torch.topk(logits, 2).values
    assert where["top2_gap"] == pytest.approx(float(top[0] - top[1]), rel=1e-5)
    assert where["gap_expected_vs_got"] >= where["top2_gap"] > 0  # greedy picked the top token


def test_paging_waste_counts_reserved_and_paged_slots():
    waste = cb.paging_waste([10, 20], [5, 30], page_size=16, reserved_new_tokens=40)
    assert waste["used_slots"] == 65
    assert waste["contiguous_slots"] == 10 + 40 + 20 + 40
    assert waste["paged_slots"] == 16 + 64  # 15 tokens -> 1 page, 50 tokens -> 4 pages
    assert waste["paged_waste"] == pytest.approx(1 - 65 / 80)
    with pytest.raises(ValueError):
        cb.paging_waste([1], [1, 2], page_size=16, reserved_new_tokens=4)


def test_kv_bytes_per_token_of_the_tiny_model(model):
    # 2 (K and V) x 2 layers x 2 KV heads x 8 dims x 4 bytes (fp32)
    assert cb.kv_bytes_per_token(model) == 2 * 2 * 2 * 8 * 4


def test_cache_rebuilds_count_on_the_measured_clock_but_not_as_steps(model):
    ids = prompts(3, seed=4)
    requests = [Request(0, 0.0, tuple(ids[0]), 6), Request(1, 0.0, tuple(ids[1]), 2),
                Request(2, 0.5, tuple(ids[2]), 3)]
    fixed = cb.continuous_batching(model, requests, batch_size=2, step_cost_s=1.0)
    # 6 steps: 5 decode passes (none at step 0) + 2 prefills (steps 0 and 2) at 1 s each; rebuilds cost nothing
    assert (fixed.steps, fixed.copy_s, fixed.busy_s) == (6, 0.0, 7.0)
    measured = cb.continuous_batching(model, requests, batch_size=2)
    assert measured.copy_s > 0.0  # request 1 left and request 2 joined: two rebuilds were timed
    assert measured.busy_s > measured.copy_s
    assert cb.static_batching(model, requests, batch_size=2).copy_s == 0.0  # static never rebuilds a batch


def test_library_continuous_batching_matches_unbatched_greedy_and_reports_pages(model):
    ids = prompts(5, seed=6)
    requests = [Request(i, 0.0, tuple(prompt), n) for i, (prompt, n) in enumerate(zip(ids, [3, 9, 5, 12, 4]))]
    served = cb.library_continuous_batching(model, requests, batch_size=2, eos_token_id=None, page_size=4,
                                            num_blocks=64)
    assert sorted(served["tokens"]) == list(range(5))  # none lost or duplicated
    for request in requests:
        assert served["tokens"][request.index] == cb.greedy_reference(model, request.prompt_ids,
                                                                      request.max_new_tokens), request.index
    assert served["page_size"] == 4 and served["seconds"] > 0
    # two requests of at most 11 + 12 tokens run at once: at least 2 pages of 4, never the whole pool
    assert 2 <= served["peak_pages_in_use"] < served["pages"]
