"""Shared fixtures: keep tests offline and give them tiny models."""

from __future__ import annotations

import os

# Tests never reach a model hub: fail fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def llm_tokenizer():
    """The workbook LLM's tokenizer (converts the bundled GGUF once if needed)."""
    from transformers import AutoTokenizer

    from helpers import models

    tokenizer = AutoTokenizer.from_pretrained(models.resolve_llm())
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@pytest.fixture()
def tiny_llama():
    """A randomly initialised 2-layer Llama with the workbook tokenizer's vocabulary size."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=49152, max_position_embeddings=512,
                         tie_word_embeddings=True, pad_token_id=2, eos_token_id=2, bos_token_id=1)
    return LlamaForCausalLM(config).eval()


@pytest.fixture()
def results_dir(tmp_path, monkeypatch):
    """Send recorded results to a temporary folder."""
    from helpers import config, results

    monkeypatch.setattr(config, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(results, "_current_notebook", None)
    return tmp_path
