"""Exercise checks for notebook 03 (fine-tuning)."""
from __future__ import annotations

from ._common import close, need_answer, verdict


def lora_parameter_count(rank: int, hidden_size: int, key_value_size: int, layers: int,
                         modules: tuple[str, ...] = ("q_proj", "v_proj")) -> int:
    """Parameters of a LoRA adapter: ``rank x (in + out)`` for each adapted projection in each layer."""
    shapes = {"q_proj": (hidden_size, hidden_size), "k_proj": (hidden_size, key_value_size),
              "v_proj": (hidden_size, key_value_size), "o_proj": (hidden_size, hidden_size)}
    unknown = set(modules) - shapes.keys()
    if unknown:
        raise ValueError(f"Unknown modules {sorted(unknown)}; use q_proj, k_proj, v_proj or o_proj.")
    return layers * sum(rank * (shapes[name][0] + shapes[name][1]) for name in modules)


def check_03_1(answer, model_config) -> bool:
    """Trainable parameters of a rank-4 LoRA on q_proj and v_proj of the notebook's LLM."""
    if need_answer(answer, "Write the number of trainable parameters, e.g. check_03_1(123456, llm_config)."):
        return False
    head_dim = model_config.hidden_size // model_config.num_attention_heads
    key_value_size = head_dim * model_config.num_key_value_heads
    expected = lora_parameter_count(4, model_config.hidden_size, key_value_size, model_config.num_hidden_layers)
    return verdict(answer == expected,
                   f"{model_config.num_hidden_layers} layers x 4 x [({model_config.hidden_size} + "
                   f"{model_config.hidden_size}) + ({model_config.hidden_size} + {key_value_size})] = {expected:,}.",
                   "Each adapted d_in x d_out matrix gets A (r x d_in) and B (d_out x r): r x (d_in + d_out) "
                   "parameters. v_proj maps the hidden size to the key/value size (head_dim x key/value heads), "
                   "which is smaller than the hidden size because of grouped-query attention.")


def check_03_2(answer) -> bool:
    """Bytes of a rank-4 LoRA adapter on GPT-3's query and value projections, in fp16."""
    if need_answer(answer, "Write the adapter size in bytes, e.g. check_03_2(50e6)."):
        return False
    expected = 96 * 2 * 4 * (12288 + 12288) * 2
    return verdict(close(answer, expected, 0.02),
                   f"96 layers x 2 matrices x 4 x (12,288 + 12,288) = {expected // 2:,} parameters, x 2 bytes "
                   f"= {expected / 1e6:.1f} MB: the paper's '35 MB' next to 350 GB of weights.",
                   "GPT-3 has 96 layers and d_model = 12,288; q and v are 12,288 x 12,288. A rank-r adapter on "
                   "one matrix has r x (d_in + d_out) parameters; fp16 stores 2 bytes each.")


DECISIONS = {
    "a": "rag",        # facts that change and live in documents
    "b": "fine_tune",  # a fixed behaviour and format at high volume on a small model
    "c": "prompt",     # a prototype without data or training budget
}


def check_03_3(answer) -> bool:
    """Pick prompt, rag or fine_tune for three situations."""
    if need_answer(answer, "Answer with a dict such as {'a': 'prompt', 'b': 'rag', 'c': 'fine_tune'}."):
        return False
    if not isinstance(answer, dict) or set(answer) != set(DECISIONS):
        return verdict(False, "", "Give one choice for each of 'a', 'b' and 'c'.")
    normalised = {key: str(value).strip().lower().replace("-", "_").replace(" ", "_") for key, value in answer.items()}
    wrong = sorted(key for key in DECISIONS if normalised[key] != DECISIONS[key])
    return verdict(not wrong,
                   "(a) prices change weekly and live in the help center: retrieve them (RAG); fine-tuned facts go "
                   "stale. (b) a fixed output format for many calls on a small model: fine-tune once, then every "
                   "prompt is short. (c) no data and no budget: start with a prompt.",
                   f"Look again at {', '.join(wrong)}: is the problem missing knowledge (RAG), a behaviour the "
                   "model must learn (fine-tune), or something wording can already fix (prompt)?")
