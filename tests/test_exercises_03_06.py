"""The exercise checks of notebooks 03 and 06 say right for right answers and wrong for wrong ones."""

from types import SimpleNamespace

import torch

from helpers import distillation, exercises

SMOLLM2 = SimpleNamespace(hidden_size=576, num_attention_heads=9, num_key_value_heads=3, num_hidden_layers=30)
BREAKDOWN = {"word embeddings": 11_720_448, "position/type embeddings": 198_144,
             "encoder layers": 10_646_784, "pooler + head": 152_460}


def test_check_03_1_counts_a_rank_4_adapter_on_q_and_v():
    assert exercises.check_03_1(30 * 4 * ((576 + 576) + (576 + 192)), SMOLLM2)
    assert not exercises.check_03_1(30 * 4 * (576 + 576) * 2, SMOLLM2)  # forgets grouped-query attention
    assert not exercises.check_03_1(None, SMOLLM2)


def test_check_03_2_gpt3_adapter_bytes():
    assert exercises.check_03_2(96 * 2 * 4 * 24_576 * 2)
    assert not exercises.check_03_2(35e9)


def test_check_03_3_accepts_spelling_variants_and_rejects_wrong_choices():
    assert exercises.check_03_3({"a": "RAG", "b": "fine-tune", "c": "prompt"})
    assert not exercises.check_03_3({"a": "fine_tune", "b": "fine_tune", "c": "prompt"})
    assert not exercises.check_03_3({"a": "rag"})


def test_check_06_1_full_vocabulary_student_ratio():
    total = sum(BREAKDOWN.values())
    right = (total - BREAKDOWN["encoder layers"] / 2) / total
    assert exercises.check_06_1(right, BREAKDOWN, 6, 3)
    assert not exercises.check_06_1(0.5, BREAKDOWN, 6, 3)


def test_check_06_2_agrees_with_the_library_loss():
    library = distillation.distillation_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]),
                                             torch.tensor([0]), temperature=2.0, alpha=0.5)
    assert exercises.check_06_2(float(library), [1, 0], [0, 2], 0, 2.0, 0.5)
    assert not exercises.check_06_2(float(library) * 1.2, [1, 0], [0, 2], 0, 2.0, 0.5)


def test_check_06_3_layer_bound():
    assert exercises.check_06_3(2.0)
    assert not exercises.check_06_3(1.6)
