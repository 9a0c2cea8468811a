"""Unit tests of helpers.pruning on a tiny random Llama model."""

from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from helpers import pruning
from helpers.exercises import nb04


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=128, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def tiny_norms(model, seed: int = 0) -> dict:
    windows = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(seed))
    return pruning.collect_input_norms(model, windows, batch_size=2)


def test_prunable_linears_are_the_block_projections_only():
    names = list(pruning.prunable_linears(tiny_llama()))
    assert len(names) == 2 * 7  # q, k, v, o, gate, up, down in each of 2 layers
    assert not any("lm_head" in name or "embed" in name for name in names)


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7])
def test_magnitude_prune_reaches_the_asked_sparsity(sparsity):
    model = pruning.magnitude_prune(tiny_llama(), sparsity)
    assert pruning.weight_sparsity(model) == pytest.approx(sparsity, abs=0.01)
    assert model.lm_head.weight.eq(0).sum() == 0  # embeddings untouched


def test_magnitude_prune_removes_the_smallest_weights():
    model = tiny_llama()
    original = pruning.prunable_linears(model)["model.layers.0.mlp.up_proj"].weight.detach().clone()
    pruning.magnitude_prune(model, 0.5)
    pruned = pruning.prunable_linears(model)["model.layers.0.mlp.up_proj"].weight
    assert original[pruned == 0].abs().max() <= original[pruned != 0].abs().min()


def test_input_norms_are_the_l2_norm_of_each_input_feature_over_all_calibration_tokens():
    model = tiny_llama()
    windows = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    layer_name = "model.layers.1.mlp.down_proj"
    captured = []
    layer = pruning.prunable_linears(model)[layer_name]
    handle = layer.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].detach()))
    with torch.no_grad():
        model(windows)
    handle.remove()
    by_hand = torch.cat([x.reshape(-1, layer.in_features) for x in captured]).double().pow(2).sum(0).sqrt()
    norms = pruning.collect_input_norms(model, windows, batch_size=3)  # uneven batches: 3 + 1 windows
    assert norms[layer_name].shape == (layer.in_features,)
    assert torch.allclose(norms[layer_name].double(), by_hand, rtol=1e-4)
    one_by_one = pruning.collect_input_norms(model, windows, batch_size=1)
    for name in norms:
        assert torch.allclose(norms[name], one_by_one[name], rtol=1e-4), name


def test_wanda_mask_has_the_asked_sparsity_in_every_row():
    scores = torch.rand(8, 40)
    keep = pruning.wanda_keep_mask(scores, 0.5)
    assert torch.all(keep.sum(dim=1) == 20)
    # every dropped score is below every kept score of the same row
    for row in range(8):
        assert scores[row][~keep[row]].max() < scores[row][keep[row]].min()


def test_wanda_uses_activations_not_only_magnitude():
    weight = torch.tensor([[0.5, -0.1, 0.3, 0.05]])
    norm = torch.tensor([0.1, 4.0, 1.0, 10.0])
    keep = pruning.wanda_keep_mask(pruning.wanda_scores(weight, norm), 0.5)
    assert keep.tolist() == [[False, True, False, True]]


def test_sort_and_topk_implementations_agree():
    model = tiny_llama()
    norms = tiny_norms(model)
    for name, module in pruning.prunable_linears(model).items():
        scores = pruning.wanda_scores(module.weight, norms[name])
        first, second = pruning.wanda_keep_mask(scores, 0.5), pruning.topk_keep_mask(scores, 0.5)
        assert pruning.masks_agree(first, second, scores)


def test_masks_agree_rejects_a_different_choice():
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    right = torch.tensor([[False, False, True, True]])
    wrong = torch.tensor([[True, False, False, True]])
    assert not pruning.masks_agree(right, wrong, scores)
    tied = torch.tensor([[1.0, 2.0, 2.0, 4.0]])
    assert pruning.masks_agree(torch.tensor([[False, True, False, True]]),
                               torch.tensor([[False, False, True, True]]), tied)


def test_wanda_prune_sparsity_and_zeros_survive_training():
    model = tiny_llama()
    norms = tiny_norms(model)
    pruning.wanda_prune(model, norms, sparsity=0.5, permanent=False)
    assert pruning.weight_sparsity(model) == pytest.approx(0.5, abs=1e-6)
    masks = {name: module.weight_mask.clone() for name, module in pruning.prunable_linears(model).items()}
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    ids = torch.randint(0, 128, (2, 12))
    for _ in range(2):
        optimizer.zero_grad()
        model(ids, labels=ids).loss.backward()
        optimizer.step()
    model(ids)  # the forward pre-hook recomputes weight = weight_orig * mask
    for name, module in pruning.prunable_linears(model).items():
        assert torch.all(module.weight[masks[name] == 0] == 0), name
        assert module.weight_orig.grad is not None
    pruning.make_permanent(model)
    assert pruning.weight_sparsity(model) == pytest.approx(0.5, abs=1e-6)
    assert not any(name.endswith("weight_orig") for name, _ in model.named_parameters())


def test_semi_structured_pattern_holds():
    model = tiny_llama()
    pruning.wanda_prune(model, tiny_norms(model), pattern=(2, 4))
    for module in pruning.prunable_linears(model).values():
        groups = (module.weight != 0).reshape(module.out_features, -1, 4).sum(dim=2)
        assert torch.all(groups <= 2)
    assert pruning.weight_sparsity(model) == pytest.approx(0.5, abs=0.01)


def test_semi_structured_rejects_bad_shapes():
    with pytest.raises(ValueError):
        pruning.semi_structured_keep_mask(torch.rand(2, 6), 2, 4)


def test_bad_sparsity_is_rejected_with_a_clear_error():
    with pytest.raises(ValueError, match="fraction"):
        pruning.magnitude_prune(tiny_llama(), 50)
    with pytest.raises(ValueError, match="exactly one"):
        pruning.wanda_masks(tiny_llama(), {}, sparsity=0.5, pattern=(2, 4))


def test_prune_mlp_neurons_shrinks_the_model_and_still_runs():
    model = tiny_llama()
    norms = tiny_norms(model)
    before = sum(p.numel() for p in model.parameters())
    pruning.prune_mlp_neurons(model, pruning.mlp_neuron_scores(model, norms), 0.25)
    assert model.config.intermediate_size == 48
    for layer in model.model.layers:
        assert layer.mlp.gate_proj.weight.shape == (48, 32)
        assert layer.mlp.down_proj.weight.shape == (32, 48)
    after = sum(p.numel() for p in model.parameters())
    assert before - after == 2 * 3 * 32 * 16
    logits = model(torch.randint(0, 128, (1, 8))).logits
    assert logits.shape == (1, 8, 128) and torch.isfinite(logits).all()


def test_prune_mlp_neurons_keeps_the_most_important():
    model = tiny_llama()
    scores = {0: torch.arange(64.0), 1: -torch.arange(64.0)}
    up_before = model.model.layers[0].mlp.up_proj.weight.detach().clone()
    pruning.prune_mlp_neurons(model, scores, 0.5)
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, up_before[32:])


def test_calibration_windows_shape_and_error():
    fake_tokenizer = lambda text, return_tensors=None: SimpleNamespace(  # noqa: E731
        input_ids=torch.arange(len(text.split())).unsqueeze(0))
    windows = pruning.calibration_windows(fake_tokenizer, ["a b c d e"] * 4, count=3, tokens_per_window=5)
    assert windows.shape == (3, 5)
    with pytest.raises(ValueError, match="more texts"):
        pruning.calibration_windows(fake_tokenizer, ["a b"], count=3, tokens_per_window=5)


def test_linear_timings_returns_three_timings():
    timings = pruning.linear_timings(16, 32, tokens=4, repeats=2)
    assert set(timings) == {"dense", "zeros", "csr"}
    assert all(t.median_s > 0 for t in timings.values())


def test_exercise_checks():
    assert nb04.check_04_1({0, 2}) is True
    assert nb04.check_04_1({1, 3}) is False
    assert nb04.check_04_2(0.5625) is True
    assert nb04.check_04_2(0.5) is False
    config = SimpleNamespace(hidden_size=576, intermediate_size=1536, num_hidden_layers=30)
    expected = 0.25 * 3 * 576 * 1536 * 30 / 134_515_008
    assert nb04.check_04_3(expected, config, 134_515_008) is True
    assert nb04.check_04_3(0.25, config, 134_515_008) is False
