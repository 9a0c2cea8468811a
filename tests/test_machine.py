"""Unit tests of helpers.machine."""


def test_decode_step_profile_splits_a_step_into_parts():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from helpers import machine

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                                         tie_word_embeddings=True)).eval()

    def tokenizer(text, return_tensors=None):
        return {"input_ids": torch.tensor([[sum(map(ord, word)) % 128 for word in text.split()]])}

    profile = machine.decode_step_profile(model, tokenizer, "a short prompt of words", steps=3, warmup=1)
    parts = profile["components"]
    assert set(parts) == {"embedding lookup", "attention projections", "attention (rest)", "MLP", "norms", "lm_head"}
    assert parts["lm_head"]["weight_bytes"] == 128 * 64 * 4  # the tied matrix, read whole every step
    assert parts["embedding lookup"]["weight_bytes"] == 64 * 4  # one row
    assert parts["MLP"]["weight_bytes"] == 2 * 3 * 64 * 128 * 4
    assert parts["attention projections"]["modules"] == 8
    assert all(part["ms"] > 0 for part in parts.values())
    total = sum(part["ms"] for part in parts.values()) + profile["other_ms"]
    assert abs(total - profile["step_ms"]) < 1e-6
    assert profile["other_ms"] < profile["step_ms"]
