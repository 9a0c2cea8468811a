"""The admit / on_finish hooks of helpers.continuous_batching.continuous_batching: a response cache in front of
the scheduler (as notebook 12's assistant uses it)."""

import pytest

from helpers import continuous_batching as cb
from helpers.continuous_batching import Request


@pytest.fixture(scope="module")
def model():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    settings = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=256, max_position_embeddings=256,
                           pad_token_id=0, bos_token_id=1, eos_token_id=2, attn_implementation="eager")
    return LlamaForCausalLM(settings).eval()


def test_a_request_answered_at_admission_never_takes_a_slot_and_finished_ones_are_reported_in_time(model):
    prompt_a, prompt_b = (5, 6, 7, 8), (9, 10, 11)
    # 0 and 2 ask the same prompt; 2 arrives after 0 has finished, so a cache filled by on_finish answers it
    requests = [Request(0, 0.0, prompt_a, 3), Request(1, 0.0, prompt_b, 8), Request(2, 5.5, prompt_a, 3)]
    cache, admitted, finished = {}, [], []

    def admit(request, now_s):
        admitted.append((request.index, now_s))
        return request.prompt_ids not in cache

    def on_finish(completed):
        finished.append(completed.index)
        cache[requests[completed.index].prompt_ids] = completed.tokens

    result = cb.continuous_batching(model, requests, batch_size=2, step_cost_s=1.0, admit=admit, on_finish=on_finish)
    assert [item.index for item in result.completed] == [0, 1]  # 2 was a hit: no slot, no result row
    assert all(2 not in slots for slots in result.timeline)
    assert finished == [0, 1] and [index for index, _ in admitted] == [0, 1, 2]
    assert admitted[2][1] >= 5.5  # looked up when its turn came, after 0 had been stored
    assert cache[prompt_a] == cb.greedy_reference(model, prompt_a, 3)


def test_when_every_arrival_is_answered_at_admission_no_step_runs(model):
    requests = [Request(0, 0.0, (5, 6, 7), 4), Request(1, 1.0, (8, 9), 4)]
    result = cb.continuous_batching(model, requests, batch_size=2, step_cost_s=1.0, admit=lambda r, now: False)
    assert result.completed == [] and result.steps == 0
