"""Knowledge distillation of the MiniLM ticket classifier into a smaller student.

The student is built the DistilBERT way (every other teacher layer copied) and, because
MiniLM's word-embedding matrix is about half of its parameters, with a vocabulary
trimmed to the word pieces the ticket domain uses. It is trained on the teacher's
softened output distribution plus the hard labels (:func:`distillation_loss`).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Sequence

from . import metrics

TEMPERATURE = 2.0  # softens the teacher enough to show its ranking of wrong labels without flattening it
ALPHA = 0.5  # equal weight on the teacher's soft targets and the true labels
STUDENT_LEARNING_RATE = 3e-4  # as for the teacher: a small encoder tolerates a larger step than BERT-base


def distillation_loss(student_logits, teacher_logits, labels, temperature: float = TEMPERATURE,
                      alpha: float = ALPHA):
    """Soft-target distillation loss mixed with the hard-label cross-entropy.

    ``alpha * T² * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)``

    The KL divergence is averaged over the batch. Dividing logits by the temperature
    ``T`` flattens both distributions so the student also learns how the teacher ranks
    the *wrong* classes; the gradients of the soft term shrink like 1/T², hence the
    T² factor that keeps the two terms on the same scale as T changes.
    ``alpha=1`` is pure distillation, ``alpha=0`` pure hard-label training.
    """
    import torch.nn.functional as F

    if temperature <= 0:
        raise ValueError("temperature must be positive (1 leaves the logits unchanged; 2-4 is typical).")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be between 0 (hard labels only) and 1 (soft targets only).")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape.")
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                    F.log_softmax(teacher_logits.detach() / temperature, dim=-1),
                    reduction="batchmean", log_target=True) * temperature ** 2
    hard = F.cross_entropy(student_logits, labels)
    return alpha * soft + (1.0 - alpha) * hard


def every_other_layer(teacher_layers: int, student_layers: int | None = None) -> list[int]:
    """Indices of the teacher layers a student keeps, evenly spaced and ending at the last layer.

    For 6 teacher layers and 3 student layers: ``[1, 3, 5]``. Keeping the last layer
    means the pooler and the classification head still read the representation they
    were trained on.
    """
    student_layers = student_layers or max(1, teacher_layers // 2)
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(f"A student needs between 1 and {teacher_layers} layers, not {student_layers}.")
    step = teacher_layers / student_layers
    return [round(teacher_layers - 1 - step * k) for k in reversed(range(student_layers))]


def domain_vocabulary(tokenizer, texts: Sequence[str], keep_ascii_characters: bool = True) -> list[str]:
    """The word pieces a student keeps, in the teacher's id order.

    Kept: the special tokens, every piece the teacher's tokenizer produces on
    ``texts`` and, with ``keep_ascii_characters``, every printable ASCII character
    alone and as a continuation piece (``"##x"``), so any new ASCII word can still be
    spelled in pieces instead of collapsing into ``[UNK]``.
    """
    if not texts:
        raise ValueError("Pass the domain's texts (e.g. the training tickets) to build a vocabulary.")
    vocabulary = tokenizer.get_vocab()
    kept_ids = set(tokenizer.all_special_ids)
    for ids in tokenizer(list(texts), add_special_tokens=False).input_ids:
        kept_ids.update(ids)
    if keep_ascii_characters:
        for character in string.printable.strip():
            for piece in (character.lower(), "##" + character.lower()):
                if piece in vocabulary:
                    kept_ids.add(vocabulary[piece])
    by_id = {index: token for token, index in vocabulary.items()}
    return [by_id[index] for index in sorted(kept_ids)]


def trimmed_tokenizer(tokenizer, kept_tokens: Sequence[str], folder: Path | str | None = None):
    """A WordPiece tokenizer over ``kept_tokens`` with the teacher's text normalisation.

    Words whose pieces were kept tokenize exactly as before (greedy longest match over a
    subset finds the same pieces); a new word falls back to shorter kept pieces, and
    only a word that cannot be spelled at all becomes ``[UNK]``.
    """
    from transformers import BertTokenizerFast

    if tokenizer.unk_token not in kept_tokens:
        raise ValueError("kept_tokens must include the unknown token; build them with domain_vocabulary().")
    options = dict(do_lower_case=getattr(tokenizer, "do_lower_case", True),
                   unk_token=tokenizer.unk_token, sep_token=tokenizer.sep_token, pad_token=tokenizer.pad_token,
                   cls_token=tokenizer.cls_token, mask_token=tokenizer.mask_token,
                   tokenize_chinese_chars=True, strip_accents=None,
                   model_max_length=tokenizer.model_max_length)
    student_tokenizer = BertTokenizerFast(vocab={token: index for index, token in enumerate(kept_tokens)}, **options)
    if folder is not None:
        student_tokenizer.save_pretrained(folder)
    return student_tokenizer


def build_student(teacher, teacher_tokenizer, layer_indices: Sequence[int], kept_tokens: Sequence[str] | None = None):
    """A smaller BERT classifier initialised from ``teacher``: ``(student, student_tokenizer)``.

    Copies the embeddings (only the rows of ``kept_tokens`` when given), the encoder
    layers ``layer_indices``, the pooler and the classification head. Without
    ``kept_tokens`` the student keeps the teacher's full vocabulary and tokenizer.
    """
    import copy

    import torch
    from transformers import AutoModelForSequenceClassification

    teacher_layers = teacher.config.num_hidden_layers
    if not layer_indices or any(not 0 <= index < teacher_layers for index in layer_indices):
        raise ValueError(f"layer_indices must name layers 0..{teacher_layers - 1}, got {list(layer_indices)}.")
    student_config = copy.deepcopy(teacher.config)
    student_config.num_hidden_layers = len(layer_indices)
    if kept_tokens is not None:
        vocabulary = teacher_tokenizer.get_vocab()
        missing = [token for token in kept_tokens if token not in vocabulary]
        if missing:
            raise ValueError(f"{len(missing)} kept tokens are not in the teacher's vocabulary, e.g. {missing[:3]}.")
        student_config.vocab_size = len(kept_tokens)
        student_tokenizer = trimmed_tokenizer(teacher_tokenizer, kept_tokens)
        student_config.pad_token_id = student_tokenizer.pad_token_id
        kept_rows = torch.tensor([vocabulary[token] for token in kept_tokens])
    else:
        student_tokenizer, kept_rows = teacher_tokenizer, None
    student = AutoModelForSequenceClassification.from_config(student_config)
    teacher_state = teacher.state_dict()
    new_state = {}
    layer_map = {f"layer.{teacher_index}.": f"layer.{student_index}."
                 for student_index, teacher_index in enumerate(layer_indices)}
    for name, tensor in teacher_state.items():
        if ".encoder.layer." in name:
            prefix, rest = name.split(".encoder.layer.", 1)
            teacher_index, tail = rest.split(".", 1)
            key = f"layer.{teacher_index}."
            if key not in layer_map:
                continue
            name = f"{prefix}.encoder.{layer_map[key]}{tail}"
        elif name.endswith("word_embeddings.weight") and kept_rows is not None:
            tensor = tensor[kept_rows]
        new_state[name] = tensor.clone()
    missing, unexpected = student.load_state_dict(new_state, strict=False)
    missing = [name for name in missing if not name.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"Student initialisation did not match: missing {missing[:5]}, unexpected {unexpected[:5]}.")
    return student.to(next(teacher.parameters()).device).eval(), student_tokenizer


def parameter_breakdown(model) -> dict[str, int]:
    """Parameters of a BERT classifier by part: word embeddings, other embeddings, encoder, head."""
    parts = {"word embeddings": 0, "position/type embeddings": 0, "encoder layers": 0, "pooler + head": 0}
    for name, parameter in model.named_parameters():
        if "word_embeddings" in name:
            part = "word embeddings"
        elif ".embeddings." in name:
            part = "position/type embeddings"
        elif ".encoder." in name:
            part = "encoder layers"
        else:
            part = "pooler + head"
        parts[part] += parameter.numel()
    return parts


def compare_speed(contenders: dict, texts: Sequence[str], batch_size: int, rounds: int = 3, repeats: int = 3,
                  max_length: int = 128, progress: bool = True) -> dict[str, dict]:
    """Inference time of several ``{name: (model, tokenizer)}`` on the same texts, side by side.

    One call classifies all ``texts`` in batches of ``batch_size`` (tokenisation
    included: the student's tokenizer is part of what ships). After one warm-up call
    each, the contenders take turns call by call (:func:`helpers.metrics.measure_alternating`,
    ``rounds * repeats`` timed calls each), so background load hits them alike.
    Returns per contender the median seconds per text, the seconds per text of every
    timed call (``per_round``, in round order) and the :class:`~helpers.metrics.Timing`
    of one call, which :func:`helpers.metrics.speedup` pairs round by round.
    Each model gets its inputs on its own device; on a GPU a call ends when its kernels have.
    """
    import torch

    from .config import module_device, synchronize

    if batch_size < 1 or rounds < 1:
        raise ValueError("batch_size and rounds must be at least 1.")
    if not texts:
        raise ValueError("Pass at least one text to time.")
    batches = [list(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]

    def runner(model, tokenizer):
        device = module_device(model)

        def run():
            with torch.inference_mode():
                for batch in batches:
                    encoded = tokenizer(batch, truncation=True, max_length=max_length, padding=True,
                                        return_tensors="pt").to(device)
                    model(**encoded)
                synchronize(device)
        return run

    runners = {}
    for name, (model, tokenizer) in contenders.items():
        model.eval()
        runners[name] = runner(model, tokenizer)
    timings = metrics.measure_alternating(runners, repeats=rounds * max(1, repeats), warmup=1, progress=progress)
    return {name: {"seconds_per_text": timing.median_s / len(texts),
                   "per_round": [seconds / len(texts) for seconds in timing.samples], "timing": timing}
            for name, timing in timings.items()}
