"""Unit tests of helpers.quantization on tiny random Llama models."""

from types import SimpleNamespace

import pytest
import torch
from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

from helpers import metrics, quantization
from helpers.exercises import nb05


def tiny_llama(seed: int = 0, hidden: int = 64, intermediate: int = 128) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=128, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


class WordTokenizer:
    """Maps each whitespace-separated word to an id below 128; id 0 starts a document."""

    bos_token_id = 0

    def __call__(self, text, return_tensors=None, add_special_tokens=True):
        ids = [sum(map(ord, word)) % 128 for word in text.split()]
        return SimpleNamespace(input_ids=torch.tensor([ids]) if return_tensors == "pt" else ids)


def test_block_linears_skip_embeddings_and_head():
    names = list(quantization.block_linears(tiny_llama()))
    assert len(names) == 14 and not any("lm_head" in name for name in names)


def test_dynamic_int8_packs_block_weights_and_keeps_outputs_close():
    model = tiny_llama()
    quantized = quantization.dynamic_int8(model)
    assert type(quantized.model.layers[0].mlp.up_proj).__name__ != "Linear" or \
        not isinstance(quantized.model.layers[0].mlp.up_proj, torch.nn.Linear)
    assert isinstance(quantized.lm_head, torch.nn.Linear)  # left in fp32
    # model_bytes counts the packed int8 weights, which are neither parameters nor buffers
    assert metrics.model_bytes(quantized) < metrics.model_bytes(model) * 0.7
    split = quantization.parameter_split(model)
    # one byte per block weight (one scale per tensor), embeddings and norms still fp32
    expected = split["projection_weights"] + split["other_parameters"] * 4
    assert metrics.model_bytes(quantized) == pytest.approx(expected, rel=0.005)
    ids = torch.randint(0, 128, (1, 10))
    with torch.no_grad():
        reference, approximate = model(ids).logits, quantized(ids).logits
    assert torch.allclose(reference, approximate, atol=0.05)


def test_expected_bytes_arithmetic():
    split = {"projection_weights": 64 * 256 * 10, "output_rows": 100, "other_parameters": 1000}
    weights = split["projection_weights"]
    assert quantization.expected_bytes(split, "fp32") == weights * 4 + 4000
    assert quantization.expected_bytes(split, "bf16") == weights * 2 + 2000
    assert quantization.expected_bytes(split, "int8") == weights + 400 + 4000
    assert quantization.expected_bytes(split, "nf4") == weights / 2 + weights / 64 * 4 + 4000
    assert quantization.expected_bytes(split, "nf4_double") == weights / 2 + weights / 64 + 10 * 4 + 4000
    assert quantization.expected_bytes(split, "nf4_cpu_packed") == weights / 2 + weights / 64 * 2 + 4000
    with pytest.raises(ValueError, match="Unknown scheme"):
        quantization.expected_bytes(split, "int3")


def test_bits_per_weight_matches_qlora():
    assert quantization.bits_per_weight("nf4") == pytest.approx(4.5)
    saved = quantization.bits_per_weight("nf4") - quantization.bits_per_weight("nf4_double")
    assert saved == pytest.approx(0.373, abs=0.001)  # QLoRA: "0.37 bits per parameter"


@pytest.mark.parametrize("scheme, config", [
    ("int8", BitsAndBytesConfig(load_in_8bit=True)),
    ("nf4", BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")),
    ("nf4_double", BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_use_double_quant=True)),
])
def test_model_bytes_counts_bitsandbytes_storage(tmp_path, scheme, config):
    model = tiny_llama()
    split = quantization.parameter_split(model)
    model.save_pretrained(tmp_path)
    quantization.quiet_bitsandbytes()
    quantized = LlamaForCausalLM.from_pretrained(tmp_path, quantization_config=config, device_map="cpu",
                                                 dtype=torch.float32)
    layers = len(quantization.block_linears(quantized))
    at_load = metrics.model_bytes(quantized)
    expected = quantization.expected_bytes(split, scheme)
    assert expected <= at_load <= expected + layers * (1024 + 64 + 4) + 256
    with torch.no_grad():
        quantized(torch.randint(0, 128, (1, 6)))  # LLM.int8 moves its row scales at the first call
    measured = metrics.model_bytes(quantized)
    if quantization.cpu_repacked(quantized):  # bitsandbytes' AVX-512-BF16 layout (see cpu_repacked)
        expected = quantization.expected_bytes(split, "nf4_cpu_packed")
    # on top: each layer's own copy of the 16-entry NF4 (and 256-entry nested) code table, rotary buffers
    assert expected <= measured <= expected + layers * (1024 + 64 + 4) + 256


def test_simulate_nf4_matches_bitsandbytes():
    from bitsandbytes.functional import dequantize_4bit, quantize_4bit

    weight = torch.randn(128, 64, generator=torch.Generator().manual_seed(1)) * 0.05
    packed, state = quantize_4bit(weight, blocksize=64, quant_type="nf4")
    reference = dequantize_4bit(packed, state, quant_type="nf4")
    simulated = quantization.simulate_nf4(weight)
    assert len(torch.unique(simulated.reshape(-1, 64)[0])) <= 16
    mismatched = (~torch.isclose(simulated, reference, atol=1e-6)).float().mean()
    assert mismatched < 0.001  # only exact midpoints may round the other way
    with pytest.raises(ValueError, match="multiple of block_size"):
        quantization.simulate_nf4(torch.randn(10, 3))


def test_simulated_nf4_copy_leaves_the_original_alone():
    model = tiny_llama()
    before = model.model.layers[0].mlp.up_proj.weight.detach().clone()
    simulated = quantization.simulated_nf4_copy(model)
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, before)
    assert not torch.equal(simulated.model.layers[0].mlp.up_proj.weight, before)
    assert torch.equal(simulated.lm_head.weight, model.lm_head.weight)


def test_linear_layer_timings_shape():
    model = tiny_llama()
    layers = {"fp32": model.model.layers[0].mlp.up_proj,
              "bf16": torch.nn.Linear(64, 128).to(torch.bfloat16)}
    timings = quantization.linear_layer_timings(layers, tokens=(1, 4), repeats=2)
    assert set(timings) == {"fp32", "bf16"} and set(timings["fp32"]) == {1, 4}
    with pytest.raises(ValueError, match="same projection"):
        quantization.linear_layer_timings({"a": torch.nn.Linear(3, 2), "b": torch.nn.Linear(4, 2)})


class FakeLlama:
    """Stands in for llama_cpp.Llama: logits come from a Hugging Face model."""

    def __init__(self, model):
        self.model, self.n_tokens, self.scores = model, 0, None

    def reset(self):
        self.n_tokens, self.scores = 0, None

    def eval(self, tokens):
        with torch.no_grad():
            self.scores = self.model(torch.tensor([tokens])).logits[0].numpy()
        self.n_tokens = len(tokens)


def test_gguf_perplexity_uses_the_same_windows_as_metrics_perplexity():
    model, tokenizer = tiny_llama(), WordTokenizer()
    texts = [" ".join(f"w{i % 17}x{i % 5}" for i in range(70)), "short text here"]
    expected = metrics.perplexity(model, tokenizer, texts, max_length=16, progress=False)
    measured = quantization.gguf_perplexity(FakeLlama(model), tokenizer, texts, max_length=16, progress=False)
    assert measured == pytest.approx(expected, rel=1e-4)


def test_gguf_row_is_optional():
    import importlib.util

    assert quantization.gguf_available() == (importlib.util.find_spec("llama_cpp") is not None)
    if not quantization.gguf_available():
        with pytest.raises(ImportError, match="pip install llama-cpp-python"):
            quantization.load_gguf("missing.gguf")


def test_comparison_table_marks_skipped_rows():
    rows = [{"name": "fp32", "bytes": 4e6, "perplexity": 10.0, "tokens_per_s": 20.0},
            {"name": "nf4", "bytes": 1e6, "perplexity": 11.0, "tokens_per_s": 25.0},
            {"name": "gguf", "skipped": "not installed"}]
    table = quantization.comparison_table(rows)
    assert "| nf4 | 1 | 0.25 | 11.00 | 1.100 | 25.0 |" in table
    assert "skipped: not installed" in table


def test_exercise_checks():
    assert nb05.check_05_1(4.127) is True
    assert nb05.check_05_1(4.5) is False
    assert nb05.check_05_2(10.0, memory_bandwidth_gb_s=2.0, model_bytes=200e6) is True
    assert nb05.check_05_2(40.0, memory_bandwidth_gb_s=2.0, model_bytes=200e6) is False
    assert nb05.check_05_3(7e9 * 4.127 / 8) is True
    assert nb05.check_05_3(3.5e9 * 2) is False


def q4_1_grid_weight(rows=8, columns=64, seed=0):
    """Weights already on a Q4_1-style grid: per group of 32, fp16 minimum + fp16 scale x (0..15), both ends used."""
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (rows, columns // 32, 32), generator=generator)
    codes[..., 0], codes[..., 1] = 0, 15
    scale = (torch.rand(rows, columns // 32, 1, generator=generator) * 0.01 + 0.001).half().float()
    minimum = (-torch.rand(rows, columns // 32, 1, generator=generator) * 0.05).half().float()
    return (minimum + scale * codes).reshape(rows, columns)


def round_trip(weight, scheme, group_size):
    q = quantization.quantize_groups(weight, scheme, group_size)
    return quantization.dequantize_groups(q["codes"], q["scale"], q["minimum"], scheme, group_size)


def test_int4_affine_in_groups_of_32_reproduces_a_q4_1_grid():
    weight = q4_1_grid_weight()
    assert torch.allclose(round_trip(weight, "int4_affine", 32), weight, atol=1e-6)
    # blocks of 64 span two Q4_1 groups with different grids: no longer lossless
    assert (round_trip(weight, "int4_affine", 64) - weight).abs().max() > 1e-4


def test_int8_symmetric_and_nf4_round_trips():
    weight = torch.randn(16, 64, generator=torch.Generator().manual_seed(2)) * 0.05
    int8 = round_trip(weight, "int8_symmetric", 32)
    scale = weight.reshape(16, 2, 32).abs().amax(-1, keepdim=True) / 127
    assert ((int8 - weight).reshape(16, 2, 32).abs() <= scale * 0.5 + 1e-4).all()
    # NF4 with fp16 block scales agrees with the fp32-scale simulation up to the scale's rounding
    assert torch.allclose(round_trip(weight, "nf4", 64), quantization.simulate_nf4(weight), atol=2e-4)
    with pytest.raises(ValueError, match="groups of 48"):
        quantization.quantize_groups(weight, "nf4", 48)


def test_pack_nibbles_round_trip():
    codes = torch.randint(0, 16, (5, 12), dtype=torch.uint8)
    packed = quantization.pack_nibbles(codes)
    assert packed.shape == (5, 6) and torch.equal(quantization.unpack_nibbles(packed), codes)


def test_group_quantized_copy_shares_the_tied_matrix_and_counts_bytes():
    model = tiny_llama()
    names = quantization.block_linears(model)
    quantized = quantization.group_quantized_copy(model, {name: ("int4_affine", 32) for name in names},
                                                  embedding=("int8_symmetric", 32))
    expected = sum(quantization.group_quantized_bytes(tuple(layer.weight.shape), "int4_affine", 32)
                   for layer in names.values())
    expected += quantization.group_quantized_bytes((128, 64), "int8_symmetric", 32)  # once: tied
    norms = sum(p.numel() * 4 for n, p in model.named_parameters() if "norm" in n)
    parts = quantization.component_bytes(quantized)
    total = metrics.model_bytes(quantized)
    assert sum(parts.values()) == total
    assert parts["embedding / lm_head"] == quantization.group_quantized_bytes((128, 64), "int8_symmetric", 32)
    assert total - norms - expected < 2000  # rotary buffers
    ids = torch.randint(0, 128, (1, 9))
    with torch.no_grad():
        reference, approximate = model(ids).logits, quantized(ids).logits
        embedded = quantized.model.embed_tokens(ids)
    assert torch.allclose(embedded[0, 3], quantized.lm_head.dequantized_weight()[ids[0, 3]])
    assert (reference - approximate).abs().max() < 0.2
    assert isinstance(model.lm_head, torch.nn.Linear)  # the original is untouched


def test_component_bytes_of_an_fp32_model():
    model = tiny_llama()
    parts = quantization.component_bytes(model)
    assert parts["embedding / lm_head"] == 128 * 64 * 4  # tied: once
    assert parts["block projections"] == quantization.parameter_split(model)["projection_weights"] * 4


def test_layer_sensitivity_restores_weights_and_rounds_one_layer_at_a_time():
    import copy

    model = tiny_llama()
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(3))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    increases = quantization.layer_sensitivity(model, ids)
    assert len(increases) == 2
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    by_hand = copy.deepcopy(model)  # layer 1 alone rounded by hand gives the same increase
    with torch.no_grad():
        for name, layer in quantization.block_linears(by_hand).items():
            if ".layers.1." in f".{name}.":
                layer.weight.copy_(round_trip(layer.weight, "nf4", 64))
    expected = quantization.calibration_nll(by_hand, ids) - quantization.calibration_nll(model, ids)
    assert increases[1] == pytest.approx(expected, abs=1e-6)
    assert increases[1] != increases[0]


def test_rounded_in_place_scores_what_the_quantized_copy_computes():
    model = tiny_llama()
    plan = {name: ("int4_affine", 32) for name in quantization.block_linears(model)}
    embedding = ("int8_symmetric", 32)
    ids = torch.randint(0, 128, (1, 10), generator=torch.Generator().manual_seed(4))
    built = quantization.group_quantized_copy(model, plan, embedding)
    with quantization.rounded_in_place(model, plan, embedding):
        simulated = quantization.calibration_nll(model, ids)
    assert simulated == pytest.approx(quantization.calibration_nll(built, ids), abs=1e-5)
    assert quantization.plan_bytes(model, plan, embedding) == metrics.model_bytes(built)
    assert quantization.calibration_nll(model, ids) != pytest.approx(simulated, abs=1e-7)  # restored


def test_capture_inputs_and_outlier_columns():
    model = tiny_llama()
    ids = torch.randint(0, 128, (7,))
    inputs = quantization.capture_inputs(model, model.model.layers[0].mlp.up_proj, ids)
    assert inputs.shape == (7, 64)
    activations = torch.zeros(4, 10)
    activations[2, 3], activations[0, 7] = 9.0, -6.5
    assert quantization.outlier_columns(activations, 6.0) == 2
    assert quantization.outlier_columns(activations, 0.0) == 2
