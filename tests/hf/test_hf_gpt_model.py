"""The Hugging Face GPT on its own: config checks, save/load, Auto classes, kernels, masks, cache, loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from huggingface_version import TutorialGPTConfig, TutorialGPTForCausalLM, TutorialGPTModel
from huggingface_version.convert import hf_config_of, model_config_of
from tests.factory import GPT, tiny_config
from utils.runtime.config import UserError

pytestmark = pytest.mark.usefixtures("single_thread")
POST_LN = {"positions": "sinusoidal", "norm_first": False, "activation": "relu"}
VARIANTS = [{}, {"positions": "learned"}, POST_LN, {"tie_output": False, "init": "xavier"}]


def hf_gpt(attn: str = "sdpa", std: float = 0.3, **overrides) -> TutorialGPTForCausalLM:
    torch.manual_seed(0)
    config = hf_config_of(tiny_config(**{**GPT, **overrides}))
    model = TutorialGPTForCausalLM._from_config(config, attn_implementation=attn)
    with torch.no_grad():  # sharper than GPT-2's init, so a mix-up cannot hide in near-uniform logits
        for p in model.parameters():
            p.normal_(0, std) if p.dim() == 2 else p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def left_padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    return ids, (ids != 0).long()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hidden_size=30, num_heads=4), "hidden_size must be divisible by num_heads, got hidden_size=30"),
        (dict(hidden_size=36, num_heads=4), "must be even"),
        (dict(positions="alibi"), "positions must be one of sinusoidal, learned, rotary; got 'alibi'"),
        (dict(num_layer=3), "unknown config key 'num_layer'; did you mean 'num_layers'?"),
        (dict(eos_token_id=30), "eos_id must be an id in [0, 30), got 30"),
        (dict(arch="transformer"), "a tutorial_gpt config is for arch 'gpt', got arch='transformer'"),
    ],
)
def test_config_values_are_checked_with_one_line_errors(kwargs, message):
    with pytest.raises(UserError) as err:
        model_config_of(TutorialGPTConfig(**kwargs))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_config_mirrors_model_config_and_hf_names():
    cfg = tiny_config(**GPT, tie_output=False, max_position=64)
    config = hf_config_of(cfg)
    assert type(config) is TutorialGPTConfig and config.model_type == "tutorial_gpt"
    assert model_config_of(config) == cfg
    assert not config.is_encoder_decoder and config.vocab_size == cfg.vocab_size == 30
    assert (config.num_hidden_layers, config.num_attention_heads, config.max_position_embeddings) == (
        2,
        4,
        64,
    )
    assert (config.pad_id, config.tie_output, config.positions, config.init) == (0, False, "rotary", "gpt2")


@pytest.mark.parametrize("overrides", VARIANTS)
def test_save_then_auto_load_round_trip(tmp_path, overrides):
    model = hf_gpt(**overrides)
    model.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is TutorialGPTConfig
    loaded, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert type(loaded) is TutorialGPTForCausalLM
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids, mask = left_padded([[5, 6, 7, 8, 9], [9, 10, 1]])
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
        got = loaded.eval()(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=0)  # position and rotary tables rebuilt exactly
    assert (loaded.lm_head.weight is loaded.model.embed_tokens.weight) == overrides.get("tie_output", True)
    assert loaded.generation_config.suppress_tokens == [0, 1]
    assert type(AutoModel.from_pretrained(tmp_path)) is TutorialGPTModel


def test_gpt2_init_scales_the_residual_projections():
    config = hf_config_of(tiny_config(**GPT, hidden_size=64, num_layers=8, ffn_size=256, src_vocab_size=50,
                                      tgt_vocab_size=50))  # fmt: skip
    torch.manual_seed(0)
    model = TutorialGPTForCausalLM(config)
    layer = model.model.layers[0]
    assert abs(layer.self_attn.q_proj.weight.std().item() - 0.02) < 0.003
    assert abs(layer.fc2.weight.std().item() - 0.02 / 4) < 0.001  # 0.02 / sqrt(2 * 8)
    assert abs(layer.self_attn.out_proj.weight.std().item() - 0.02 / 4) < 0.001
    assert layer.fc1.bias.abs().max() == 0 and model.lm_head.weight is model.model.embed_tokens.weight


@pytest.mark.parametrize("positions", ["rotary", "learned", "sinusoidal"])
def test_eager_and_sdpa_agree_eager_returns_causal_attentions_and_rows_are_independent(positions):
    sdpa, eager = hf_gpt("sdpa", positions=positions), hf_gpt("eager", positions=positions)
    ids, mask = left_padded([[5, 6, 7, 8, 9, 1, 11], [9, 10, 1, 13]])
    with torch.no_grad():
        fast = sdpa(input_ids=ids, attention_mask=mask).logits
        out = eager(input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
        alone = sdpa(input_ids=ids[1:, 3:]).logits  # the short row without its padding
    torch.testing.assert_close(out.logits, fast, rtol=1e-4, atol=5e-5)
    torch.testing.assert_close(fast[1, 3:], alone[0], rtol=0, atol=1e-5)  # left padding changes nothing
    assert torch.isfinite(fast).all()  # a pad's row sees itself: finite, never read
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 7, 7)
    assert out.attentions[0].triu(1).abs().max() == 0  # look-ahead mask
    assert out.attentions[1][1, :, 3:, :3].abs().max() == 0  # no real token looks at a pad
    assert len(out.hidden_states) == 3
    with pytest.raises(ValueError, match="needs the eager attention kernel"):
        sdpa(input_ids=ids, output_attentions=True)


def test_positions_come_from_the_attention_mask_or_the_pad_id_or_the_cache():
    model = hf_gpt()
    ids, mask = left_padded([[5, 6, 7, 8], [9, 10]])
    with torch.no_grad():
        by_mask = model(input_ids=ids, attention_mask=mask).logits
        by_pad = model(input_ids=ids).logits  # no mask: PAD is no token, as in pytorch_version
        explicit = model(
            input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)
        ).logits
    assert torch.equal(by_mask, by_pad) and torch.equal(by_mask, explicit)
    with pytest.raises(ValueError, match="attention_mask covers 3 positions"):
        model(input_ids=ids, attention_mask=mask[:, :3])


def test_forward_returns_a_real_cache_and_incremental_steps_match_the_full_forward():
    model = hf_gpt()
    ids, mask = left_padded([list(range(4, 24)), list(range(10, 22))])
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        out = model(input_ids=ids[:, :9], attention_mask=mask[:, :9], use_cache=True)
        cache, steps = out.cache, [out.logits]
        assert type(cache).__name__ == "DynamicCache" and cache.get_seq_length() == 9
        for t in range(9, ids.size(1)):
            out = model(
                input_ids=ids[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache, use_cache=True
            )
            assert out.cache is cache and cache.get_seq_length() == t + 1
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-5)


def test_labels_give_the_shifted_cross_entropy_and_logits_to_keep_keeps_the_last():
    model = hf_gpt()
    ids = torch.randint(4, 30, (3, 9), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[0, :4] = -100  # a prompt carries no loss
    out = model(input_ids=ids, labels=labels)
    expected = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    assert out.cache is None  # nobody decodes further from a scored batch
    last = model(input_ids=ids, logits_to_keep=1).logits
    assert last.shape == (3, 1, 30)
    torch.testing.assert_close(last[:, 0], out.logits[:, -1], rtol=0, atol=1e-6)  # one row's matmul
    picked = model(input_ids=ids, logits_to_keep=torch.tensor([0, 4])).logits
    torch.testing.assert_close(picked, out.logits[:, [0, 4]], rtol=0, atol=1e-6)
