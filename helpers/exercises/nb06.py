"""Exercise checks for notebook 06 (distillation)."""
from __future__ import annotations

import math

from ._common import close, need_answer, verdict


def check_06_1(answer, breakdown: dict[str, int], teacher_layers: int, student_layers: int) -> bool:
    """Parameter ratio of a student that keeps the full vocabulary and drops layers."""
    if need_answer(answer, "Write the ratio as a fraction, e.g. check_06_1(0.5, teacher_breakdown, 6, 2)."):
        return False
    teacher_total = sum(breakdown.values())
    student_total = (breakdown["word embeddings"] + breakdown["position/type embeddings"]
                     + breakdown["encoder layers"] * student_layers / teacher_layers + breakdown["pooler + head"])
    expected = student_total / teacher_total
    return verdict(close(answer, expected, 0.01),
                   f"{student_total / 1e6:.1f} M / {teacher_total / 1e6:.1f} M = {expected:.2f}: the embedding "
                   f"matrix does not shrink when layers go, so dropping {1 - student_layers / teacher_layers:.0%} "
                   "of the layers removes far less of the parameters.",
                   "Keep every embedding, the pooler and the head; keep student_layers / teacher_layers of the "
                   "encoder parameters; divide by the teacher's total.")


def check_06_2(answer, student_logits, teacher_logits, label: int, temperature: float, alpha: float) -> bool:
    """The distillation loss of one example, computed by hand."""
    if need_answer(answer, "Write the loss as a number, e.g. check_06_2(0.7, [1, 0], [0, 2], 0, 2.0, 0.5)."):
        return False

    def softmax(logits, t):
        exps = [math.exp(value / t) for value in logits]
        return [value / sum(exps) for value in exps]

    student_soft, teacher_soft = softmax(student_logits, temperature), softmax(teacher_logits, temperature)
    kl = sum(t * math.log(t / s) for t, s in zip(teacher_soft, student_soft))
    cross_entropy = -math.log(softmax(student_logits, 1.0)[label])
    expected = alpha * temperature ** 2 * kl + (1 - alpha) * cross_entropy
    return verdict(close(answer, expected, 0.01),
                   f"KL at T={temperature:g} is {kl:.4f}, "
                   f"times T² and alpha gives {alpha * temperature ** 2 * kl:.4f}; "
                   f"plus (1 - alpha) x cross-entropy {cross_entropy:.4f} = {expected:.4f}.",
                   "Divide both logit vectors by T, take softmaxes, KL(teacher || student) = sum t log(t / s); "
                   "multiply by T² and alpha; add (1 - alpha) x the ordinary cross-entropy at T = 1.")


def check_06_3(answer, teacher_layers: int = 6, student_layers: int = 3) -> bool:
    """Upper bound on the speed-up from dropping encoder layers alone."""
    if need_answer(answer, "Write the speed-up as a number, e.g. check_06_3(1.5)."):
        return False
    expected = teacher_layers / student_layers
    return verdict(close(answer, expected, 0.01),
                   f"If only the {teacher_layers} encoder layers cost time, {student_layers} layers take "
                   f"{student_layers / teacher_layers:.0%} of it: at most {expected:.1f}x. Tokenisation, the embedding "
                   "lookup, the head and Python overhead do not shrink, so the measured speed-up is lower; the "
                   "student's longer word-piece sequences (rare words are spelled in smaller pieces) cost a little "
                   "more.",
                   "Time is (roughly) proportional to the number of layers a token passes through.")
