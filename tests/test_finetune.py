"""Unit tests of helpers.finetune on tiny random models (the real models are not needed)."""
from __future__ import annotations

import pytest
import torch

from helpers import data, finetune, generation, labels, models
from helpers.data import LABELS, Ticket

TICKETS = [Ticket("I was charged twice this month", "billing"),
           Ticket("Please refund my last payment", "refund"),
           Ticket("I cannot log in since yesterday", "login"),
           Ticket("The desktop app does not sync my folder", "sync_issue"),
           Ticket("Can you add dark mode to the web app?", "feature_request"),
           Ticket("I want to move to the Business plan", "plan_upgrade")]


@pytest.fixture(scope="module")
def llm_tokenizer():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models.resolve_llm())
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tiny_llama(vocab_size: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=vocab_size, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("answer, expected", [
    ("billing", "billing"), ("  Billing.\n", "billing"), ('"sync_issue"', "sync_issue"),
    ("The label is billing.", "unknown"), ("billing, refund", "unknown"), ("", "unknown"), ("sync issue", "unknown"),
])
def test_strict_parse_label_accepts_exactly_one_label(answer, expected):
    assert labels.parse_label(answer, strict=True) == expected


def test_score_answers_counts_accuracy_and_format():
    scores = finetune.score_answers(["billing", "Refund.", "I think login"], ["billing", "cancel", "login"])
    assert scores["accuracy"] == pytest.approx(1 / 3)
    assert scores["format_valid_rate"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        finetune.score_answers(["billing"], [])


def test_triage_messages_validate_input():
    assert finetune.triage_messages("hello")[-1]["role"] == "user"
    assert finetune.triage_messages("hello", "billing")[-1] == {"role": "assistant", "content": "billing"}
    with pytest.raises(ValueError):
        finetune.triage_messages("   ")
    with pytest.raises(ValueError):
        finetune.triage_messages("hello", "not_a_label")


def test_lora_examples_put_the_loss_on_the_answer_only(llm_tokenizer):
    examples = finetune.build_lora_examples(llm_tokenizer, TICKETS[:2])
    for example, ticket in zip(examples, TICKETS):
        assert len(example["input_ids"]) == len(example["labels"])
        answer_ids = [token for token in example["labels"] if token != -100]
        assert llm_tokenizer.decode(answer_ids).strip().startswith(ticket.label)
        prompt_length = example["labels"].index(answer_ids[0])
        assert all(token == -100 for token in example["labels"][:prompt_length])
        # The prompt part is exactly the evaluation prompt, so training and evaluation agree.
        assert llm_tokenizer.decode(example["input_ids"][:prompt_length]) == finetune.triage_prompt(
            llm_tokenizer, ticket.text)


def test_collate_pads_right_and_masks_padding():
    batch = finetune.collate_causal([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
                                     {"input_ids": [8], "labels": [8]}], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_lora_training_lowers_loss_and_adapter_is_small(llm_tokenizer):
    from peft import LoraConfig, get_peft_model

    model = tiny_llama(len(llm_tokenizer))
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            lora_dropout=0.0, task_type="CAUSAL_LM"))
    trainable, total = finetune.trainable_parameters(lora)
    assert 0 < trainable < 0.01 * total
    losses = finetune.train_lora(lora, llm_tokenizer, TICKETS, steps=12, batch_size=3, learning_rate=1e-2,
                                 warmup_steps=2, progress=False)
    assert len(losses) == 12
    assert sum(losses[-3:]) < sum(losses[:3])
    files = finetune.saved_adapter_files(lora)
    assert any(name.endswith(".safetensors") for name in files)
    # The adapter holds the trainable weights (fp32) and little else.
    assert trainable * 4 <= sum(files.values()) < trainable * 4 + 100_000
    prompts = finetune.triage_prompts(llm_tokenizer, [t.text for t in TICKETS[:2]])
    answers = generation.generate(lora, llm_tokenizer, prompts,
                                  max_new_tokens=3, batch_size=2, progress=False)
    assert len(answers) == 2 and all(isinstance(answer, str) for answer in answers)


def test_train_lora_rejects_a_model_without_trainable_weights(llm_tokenizer):
    model = tiny_llama(len(llm_tokenizer))
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="get_peft_model"):
        finetune.train_lora(model, llm_tokenizer, TICKETS, steps=1, progress=False)


def test_folder_bytes(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_bytes(b"y" * 5)
    assert finetune.folder_bytes(tmp_path) == {"a.bin": 10, "sub/b.txt": 5}
    with pytest.raises(ValueError):
        finetune.folder_bytes(tmp_path / "missing")


@pytest.fixture()
def tiny_bert_source(tmp_path):
    """A tiny random BERT with MiniLM's tokenizer, saved like a checkpoint folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(models.embedder_source())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, initializer_range=0.2,
                        hidden_dropout_prob=0.0)
    folder = tmp_path / "tiny-bert"
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_classifier_training_is_deterministic_and_cached(tiny_bert_source, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "load_tickets", lambda split: TICKETS * 3)
    cache = tmp_path / "cache"
    first, tokenizer = finetune.load_or_train_ticket_classifier(epochs=2, seed=3, cache_path=cache,
                                                                source=tiny_bert_source, progress=False)
    assert first.config.num_labels == len(LABELS) and (cache / "workbook_recipe.json").exists()
    assert len(finetune.classifier_training_losses(cache)) == 2 * 2  # 18 tickets, batch 16: two steps per epoch
    second, _ = finetune.load_or_train_ticket_classifier(epochs=2, seed=3, cache_path=tmp_path / "other",
                                                         source=tiny_bert_source, progress=False)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    loaded, _ = finetune.load_or_train_ticket_classifier(epochs=2, seed=3, cache_path=cache,
                                                         source=tiny_bert_source, progress=False)
    texts = [ticket.text for ticket in TICKETS]
    assert torch.allclose(finetune.classifier_logits(first, tokenizer, texts),
                          finetune.classifier_logits(loaded, tokenizer, texts), atol=1e-6)
    assert set(finetune.classify(loaded, tokenizer, texts)) <= set(LABELS)


def test_classifier_learns_a_tiny_task(tiny_bert_source):
    model, tokenizer = finetune.new_ticket_classifier(tiny_bert_source, seed=0)
    losses = finetune.train_sequence_classifier(model, tokenizer, TICKETS, epochs=40, batch_size=6,
                                                learning_rate=1e-2, progress=False)
    assert losses[-1] < losses[0]
    predictions = finetune.classify(model, tokenizer, [t.text for t in TICKETS])
    assert sum(p == t.label for p, t in zip(predictions, TICKETS)) >= 5


def test_tfidf_baseline_fits_its_training_data():
    baseline = finetune.tfidf_baseline(TICKETS * 2)
    assert list(baseline.predict([t.text for t in TICKETS])) == [t.label for t in TICKETS]
    with pytest.raises(ValueError):
        finetune.tfidf_baseline([])


def test_answer_loss_equals_the_models_own_loss(llm_tokenizer):
    model = tiny_llama(len(llm_tokenizer))
    examples = finetune.build_lora_examples(llm_tokenizer, TICKETS[:3])
    batch = finetune.collate_causal(examples, llm_tokenizer.pad_token_id)
    with torch.no_grad():
        expected = model(**batch).loss
        assert finetune.answer_loss(model, **batch).item() == pytest.approx(expected.item(), rel=1e-5)
    batch["labels"][:] = -100
    with pytest.raises(ValueError):
        finetune.answer_loss(model, **batch)


def test_length_grouped_batches_cover_every_index_once():
    lengths = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 11]
    batches = finetune._length_grouped_batches(lengths, 3, torch.Generator().manual_seed(0), group_batches=2)
    flat = sorted(index for batch in batches for index in batch.tolist())
    assert flat == list(range(len(lengths))) and len(batches) == 4  # ceil(11 / 3)
    again = finetune._length_grouped_batches(lengths, 3, torch.Generator().manual_seed(0), group_batches=2)
    assert [b.tolist() for b in batches] == [b.tolist() for b in again]
