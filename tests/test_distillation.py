"""Unit tests of helpers.distillation on tiny models and hand-computed numbers."""
from __future__ import annotations

import math

import pytest
import torch

from helpers import distillation, finetune, models
from helpers.data import LABELS, Ticket


def test_distillation_loss_matches_a_hand_computed_value():
    student = torch.tensor([[1.0, 0.0]])
    teacher = torch.tensor([[0.0, 2.0]])
    labels = torch.tensor([0])
    temperature, alpha = 2.0, 0.25
    # By hand: at T=2 the student's softmax over (0.5, 0) and the teacher's over (0, 1).
    s = [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)]
    t = [1 / (1 + math.e), math.e / (1 + math.e)]
    kl = sum(ti * math.log(ti / si) for ti, si in zip(t, s))
    cross_entropy = -math.log(math.e / (math.e + 1))  # student's probability of class 0 at T=1
    expected = alpha * temperature ** 2 * kl + (1 - alpha) * cross_entropy
    assert expected == pytest.approx(0.25 * 4 * 0.2574031646068913 + 0.75 * 0.3132616875182228)
    loss = distillation.distillation_loss(student, teacher, labels, temperature=temperature, alpha=alpha)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_distillation_loss_limits_and_errors():
    student = torch.randn(4, 12)
    labels = torch.randint(0, 12, (4,))
    # Identical logits: the soft term vanishes, alpha=1 gives zero.
    loss = distillation.distillation_loss(student, student.clone(), labels, 3.0, 1.0)
    assert loss.item() == pytest.approx(0, abs=1e-6)
    assert distillation.distillation_loss(student, torch.randn(4, 12), labels, 3.0, 0.0).item() == pytest.approx(
        torch.nn.functional.cross_entropy(student, labels).item())
    with pytest.raises(ValueError):
        distillation.distillation_loss(student, student, labels, temperature=0, alpha=0.5)
    with pytest.raises(ValueError):
        distillation.distillation_loss(student, student, labels, temperature=2, alpha=1.5)
    with pytest.raises(ValueError):
        distillation.distillation_loss(student, torch.randn(4, 11), labels, temperature=2, alpha=0.5)


def test_distillation_loss_gradient_reaches_the_student_only():
    student = torch.randn(3, 5, requires_grad=True)
    teacher = torch.randn(3, 5, requires_grad=True)
    distillation.distillation_loss(student, teacher, torch.tensor([0, 1, 2]), 2.0, 0.5).backward()
    assert student.grad is not None and teacher.grad is None


@pytest.mark.parametrize("teacher_layers, student_layers, expected", [(6, 3, [1, 3, 5]), (12, 6, [1, 3, 5, 7, 9, 11]),
                                                                      (6, 1, [5]), (6, 6, [0, 1, 2, 3, 4, 5])])
def test_every_other_layer(teacher_layers, student_layers, expected):
    assert distillation.every_other_layer(teacher_layers, student_layers) == expected


def test_every_other_layer_rejects_impossible_students():
    with pytest.raises(ValueError):
        distillation.every_other_layer(6, 7)


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(models.embedder_source())


DOMAIN = ["My invoice shows a double charge", "The sync icon stays red with error LC-7307",
          "Please refund the annual plan"]


def test_trimmed_tokenizer_reproduces_seen_text_and_spells_new_words(minilm_tokenizer):
    kept = distillation.domain_vocabulary(minilm_tokenizer, DOMAIN)
    assert len(kept) < 400 and "[UNK]" in kept and "##z" in kept and "charge" in kept
    student_tokenizer = distillation.trimmed_tokenizer(minilm_tokenizer, kept)
    assert len(student_tokenizer) == len(kept)
    for text in DOMAIN:
        teacher_tokens = minilm_tokenizer.convert_ids_to_tokens(minilm_tokenizer(text).input_ids)
        student_tokens = student_tokenizer.convert_ids_to_tokens(student_tokenizer(text).input_ids)
        assert student_tokens == teacher_tokens
    # A word never seen in the domain is spelled from kept pieces, not lost.
    tokens = student_tokenizer.tokenize("zebra")
    assert "[UNK]" not in tokens and "".join(t.removeprefix("##") for t in tokens) == "zebra"
    # Characters outside ASCII that the domain never used become [UNK].
    assert student_tokenizer.tokenize("日") == ["[UNK]"]


def tiny_teacher(tokenizer):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=len(LABELS))
    return BertForSequenceClassification(config).eval()


def test_student_copies_teacher_layers_and_kept_embeddings(minilm_tokenizer):
    teacher = tiny_teacher(minilm_tokenizer)
    kept = distillation.domain_vocabulary(minilm_tokenizer, DOMAIN)
    student, student_tokenizer = distillation.build_student(teacher, minilm_tokenizer, [1, 3], kept)
    assert student.config.num_hidden_layers == 2 and student.config.vocab_size == len(kept)
    assert torch.equal(student.bert.encoder.layer[0].attention.self.query.weight,
                       teacher.bert.encoder.layer[1].attention.self.query.weight)
    assert torch.equal(student.bert.encoder.layer[1].output.dense.weight,
                       teacher.bert.encoder.layer[3].output.dense.weight)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    charge_teacher = minilm_tokenizer.convert_tokens_to_ids("charge")
    charge_student = student_tokenizer.convert_tokens_to_ids("charge")
    assert torch.equal(student.bert.embeddings.word_embeddings.weight[charge_student],
                       teacher.bert.embeddings.word_embeddings.weight[charge_teacher])
    # With all layers and the trimmed vocabulary the student computes exactly what the teacher does.
    full_depth, full_tokenizer = distillation.build_student(teacher, minilm_tokenizer, [0, 1, 2, 3], kept)
    teacher_logits = finetune.classifier_logits(teacher, minilm_tokenizer, DOMAIN)
    student_logits = finetune.classifier_logits(full_depth, full_tokenizer, DOMAIN)
    assert torch.allclose(teacher_logits, student_logits, atol=1e-5)
    parts = distillation.parameter_breakdown(student)
    assert sum(parts.values()) == sum(p.numel() for p in student.parameters())
    assert parts["word embeddings"] == len(kept) * 16
    with pytest.raises(ValueError):
        distillation.build_student(teacher, minilm_tokenizer, [4])


def test_distilled_training_runs_with_the_soft_loss(minilm_tokenizer):
    teacher = tiny_teacher(minilm_tokenizer)
    tickets = [Ticket(text, label) for text, label in zip(DOMAIN, ["billing", "sync_issue", "refund"])]
    student, student_tokenizer = distillation.build_student(
        teacher, minilm_tokenizer, [1, 3], distillation.domain_vocabulary(minilm_tokenizer, DOMAIN))
    teacher_logits = finetune.classifier_logits(teacher, minilm_tokenizer, DOMAIN)

    def loss_fn(logits, labels, soft):
        return distillation.distillation_loss(logits, soft, labels, temperature=2.0, alpha=0.5)

    losses = finetune.train_sequence_classifier(student, student_tokenizer, tickets, epochs=3, batch_size=2,
                                                loss_fn=loss_fn, teacher_logits=teacher_logits, progress=False)
    assert len(losses) == 6 and all(math.isfinite(loss) for loss in losses)


def test_compare_speed_reports_every_contender(minilm_tokenizer):
    teacher = tiny_teacher(minilm_tokenizer)
    timings = distillation.compare_speed({"a": (teacher, minilm_tokenizer), "b": (teacher, minilm_tokenizer)},
                                         DOMAIN, batch_size=2, rounds=2, repeats=1, progress=False)
    assert set(timings) == {"a", "b"}
    assert all(len(entry["per_round"]) == 2 and entry["seconds_per_text"] > 0 for entry in timings.values())
    with pytest.raises(ValueError):
        distillation.compare_speed({"a": (teacher, minilm_tokenizer)}, [], batch_size=1)


def test_compare_speed_alternates_the_contenders_call_by_call():
    from transformers import BatchEncoding

    from helpers import metrics

    calls = []

    class Named(torch.nn.Module):
        def __init__(self, label):
            super().__init__()
            self.label = label
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask):
            calls.append(self.label)

    def tokenizer(batch, **options):
        return BatchEncoding({"input_ids": torch.ones(len(batch), 3, dtype=torch.long),
                              "attention_mask": torch.ones(len(batch), 3, dtype=torch.long)})

    timings = distillation.compare_speed({"a": (Named("a"), tokenizer), "b": (Named("b"), tokenizer)},
                                         ["x", "y"], batch_size=2, rounds=3, repeats=1, progress=False)
    assert calls == ["a", "b"] + ["a", "b"] * 3  # one warm-up each, then strictly alternating rounds
    assert len(timings["a"]["timing"].samples) == 3 == len(timings["b"]["per_round"])
    assert metrics.speedup(timings["a"]["timing"], timings["b"]["timing"])["n"] == 3
