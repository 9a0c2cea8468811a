"""Unit tests of helpers.speculative on tiny Llamas: identical outputs and an honest acceptance count."""

import copy
import random

import pytest

from helpers import speculative


def tiny_llama(seed, initializer_range=0.3):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    settings = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=256, max_position_embeddings=512, pad_token_id=0,
                           bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, attn_implementation="eager",
                           initializer_range=initializer_range)
    return LlamaForCausalLM(settings).eval()


@pytest.fixture(scope="module")
def model():
    return tiny_llama(0)


@pytest.fixture(scope="module")
def counting_model():
    """A Llama wired to continue counting: the next token after t is t + 1 (attention and MLP outputs zeroed,
    the output head maps each token's embedding to the next token). It copies a run from its prompt
    exactly when that run counts upwards, so prompt lookup has something right to draft."""
    import torch

    counter = tiny_llama(1)
    with torch.no_grad():
        for layer in counter.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings = counter.model.embed_tokens.weight
        unit = embeddings / embeddings.norm(dim=1, keepdim=True).clamp(min=1e-6)
        counter.lm_head.weight.copy_(torch.roll(unit, 1, dims=0))
    return counter


def random_prompt(length, seed):
    generator = random.Random(seed)
    return [generator.randrange(3, 256) for _ in range(length)]


def test_counting_model_counts(counting_model):
    assert speculative.greedy_ids(counting_model, [10, 50], 4) == [51, 52, 53, 54]


@pytest.mark.parametrize("speculation", [{"prompt_lookup_num_tokens": 4}, {"assistant": True}])
def test_speculative_greedy_equals_plain_greedy(model, speculation):
    if speculation.pop("assistant", False):
        speculation = {"assistant_model": tiny_llama(7)}  # a poor drafter: most drafts are rejected
    for seed in range(3):
        prompt = random_prompt(20, seed) * 2  # something for prompt lookup to match
        plain = speculative.greedy_ids(model, prompt, 20)
        assert speculative.counted_decode(model, prompt, 20, **speculation).tokens == plain


def test_acceptance_is_one_when_the_drafter_is_the_target_itself(model):
    prompt = random_prompt(30, 5)
    count = speculative.counted_decode(model, prompt, 24, assistant_model=copy.deepcopy(model))
    assert count.tokens == speculative.greedy_ids(model, prompt, 24)
    assert count.target_passes < 24  # several tokens per verification pass
    assert count.drafted > 0 and count.accepted / count.drafted >= 0.9


def test_plain_greedy_drafts_nothing_and_passes_once_per_token(model):
    count = speculative.counted_decode(model, random_prompt(12, 1), 10)
    assert (count.target_passes, count.drafted, count.accepted) == (10, 0, 0)


def test_a_prompt_that_repeats_itself_is_accepted_more_than_random_tokens(counting_model):
    # the prompt counts 100..139, then starts again at 100..109: the answer (110, 111, ...) is in the prompt
    repeating = list(range(100, 140)) + list(range(100, 110))
    copied = speculative.counted_decode(counting_model, repeating, 24, prompt_lookup_num_tokens=5)
    scattered = speculative.counted_decode(counting_model, random_prompt(50, 3), 24, prompt_lookup_num_tokens=5)
    assert copied.tokens == list(range(110, 134))
    copied_rate = copied.accepted / copied.drafted
    scattered_rate = scattered.accepted / scattered.drafted if scattered.drafted else 0.0
    assert copied_rate == pytest.approx(1.0) and copied.target_passes <= 6
    assert scattered_rate < 0.5 < copied_rate


def test_compare_speculative_reports_identity_speed_and_acceptance(counting_model):
    prompts = [list(range(100, 140)) + list(range(100, 110)), random_prompt(50, 4)]
    report = speculative.compare_speculative(counting_model, prompts, 16, warmup=False, prompt_lookup_num_tokens=5)
    assert report["all_identical"] and report["identical"] == [True, True]
    assert report["new_tokens"] == 32 and report["prompts"] == 2
    assert report["accepted"] <= report["drafted"]
    assert report["per_prompt_acceptance"][0] > 0.8 > report["per_prompt_acceptance"][1]
    assert 0.0 <= report["acceptance_rate"]["value"] <= 1.0
    ratio = report["tokens_per_s"]["value"] / report["baseline_tokens_per_s"]["value"]
    assert report["speedup"]["value"] == pytest.approx(ratio)
    with pytest.raises(ValueError):
        speculative.compare_speculative(counting_model, prompts, 4)


def count(tokens, passes, drafted, seconds, prompt_length=10):
    """A DecodeCount with ``drafted`` draft tokens: tokens fed = prompt + drafts + one own token per later pass."""
    return speculative.DecodeCount(list(tokens), passes, prompt_length + drafted + passes - 1, prompt_length, seconds)


def test_summarise_pools_times_and_counts_over_prompts():
    rows = [{"plain": count([1, 2, 3, 4], 4, 0, 4.0), "fast": count([1, 2, 3, 4], 2, 3, 1.0)},
            {"plain": count([5, 6], 2, 0, 2.0), "fast": count([5, 7], 2, 1, 2.0)}]
    report = speculative.summarise(rows, "fast")
    assert report["speedup"]["value"] == pytest.approx(6.0 / 3.0)  # ratio of totals, not mean of ratios (2.5)
    assert report["per_prompt_speedup"] == pytest.approx([4.0, 1.0])
    assert (report["drafted"], report["accepted"]) == (4, 2)
    assert report["acceptance_rate"]["value"] == pytest.approx(0.5)
    assert report["identical"] == [True, False] and not report["all_identical"]
    low, high = report["speedup"]["interval"]
    assert 1.0 <= low <= 2.0 <= high <= 4.0


def test_decode_variants_rotates_the_order_and_keeps_outputs(model):
    calls = []
    original = speculative.counted_decode

    def spy(model_, prompt, new_tokens, eos=None, **speculation):
        calls.append("lookup" if speculation else "plain")
        return original(model_, prompt, new_tokens, eos, **speculation)

    speculative.counted_decode = spy
    try:
        rows = speculative.decode_variants(model, [random_prompt(12, 1), random_prompt(12, 2)], 6,
                                           {"plain": {}, "lookup": {"prompt_lookup_num_tokens": 3}}, warmup=False)
    finally:
        speculative.counted_decode = original
    assert calls == ["plain", "lookup", "lookup", "plain"]
    assert [list(row) for row in rows] == [["plain", "lookup"], ["plain", "lookup"]]
    assert all(row["plain"].tokens == row["lookup"].tokens and row["plain"].seconds > 0 for row in rows)


def test_expected_speedup_matches_leviathan_formula():
    assert speculative.expected_speedup(0.0, 5, 0.5) == pytest.approx(1 / 3.5)  # every draft wasted
    assert speculative.expected_speedup(1.0, 4, 0.0) == pytest.approx(5.0)  # free, perfect drafter
    assert speculative.expected_speedup(0.8, 3, 0.1) == pytest.approx((1 - 0.8 ** 4) / 0.2 / 1.3)
    with pytest.raises(ValueError):
        speculative.expected_speedup(1.5, 3, 0.1)


def test_layer_dropped_draft_keeps_the_chosen_layers(model):
    import torch

    whole = speculative.layer_dropped_draft(model, [0, 1])
    prompt = random_prompt(16, 2)
    assert speculative.greedy_ids(whole, prompt, 8) == speculative.greedy_ids(model, prompt, 8)
    assert speculative.top1_agreement(model, whole, prompt) == pytest.approx(1.0)
    half = speculative.layer_dropped_draft(model, [1], draft_tokens=3)
    assert len(half.model.layers) == 1 and len(model.model.layers) == 2  # the target is untouched
    assert torch.equal(half.model.layers[0].mlp.up_proj.weight, model.model.layers[1].mlp.up_proj.weight)
    assert half.generation_config.num_assistant_tokens == 3
    assert speculative.greedy_ids(half, prompt, 8) != speculative.greedy_ids(model, prompt, 8)
    with pytest.raises(ValueError):
        speculative.layer_dropped_draft(model, [1, 0])


def test_first_divergence_and_margin(model):
    assert speculative.first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert speculative.first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert speculative.first_divergence([1, 2], [1, 2, 3]) == 2
    prompt = random_prompt(10, 3)
    generated = speculative.greedy_ids(model, prompt, 3)
    assert speculative.top2_margin(model, prompt, generated, 1) > 0.0
