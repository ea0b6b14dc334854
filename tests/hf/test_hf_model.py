"""The Hugging Face model on its own: config checks, save/load, Auto classes, kernels, cache, loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForSeq2SeqLM

from huggingface_version import TutorialTransformerConfig, TutorialTransformerForConditionalGeneration
from huggingface_version.convert import hf_config_of, model_config_of
from tests.conftest import tiny_config
from utils.runtime.config import UserError

pytestmark = pytest.mark.usefixtures("single_thread")


def hf_tiny(attn: str = "sdpa", **overrides) -> TutorialTransformerForConditionalGeneration:
    torch.manual_seed(0)
    config = hf_config_of(tiny_config(**overrides))
    model = TutorialTransformerForConditionalGeneration._from_config(config, attn_implementation=attn)
    with torch.no_grad():  # sharper than the xavier init, so decoding branches and stops
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.5)
    return model.eval()


@pytest.fixture
def padded_batch(batch):
    src, tgt = batch
    tgt = tgt.clone()
    tgt[1, 4:] = 0  # a padded target row as well
    return src, tgt


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hidden_size=30, num_heads=4), "hidden_size must be divisible by num_heads, got hidden_size=30"),
        (dict(num_layers=0), "num_layers must be a positive integer, got 0"),
        (dict(dropout=1.0), "dropout must be in [0, 1), got 1.0"),
        (dict(num_layer=3), "unknown config key 'num_layer'; did you mean 'num_layers'?"),
        (dict(pad_token_id=99), "pad_id must be an id in [0, 30), got 99"),
        (dict(decoder_start_token_id=-1), "decoder_start_token_id must be an id in [0, 30), got -1"),
        (dict(share_embeddings=True, tie_word_embeddings=False), "needs tie_word_embeddings=True"),
        (dict(share_embeddings=True, tgt_vocab_size=31), "share_embeddings needs one vocabulary"),
    ],
)
def test_config_values_are_checked_where_the_toolkit_reads_them_with_one_line_errors(kwargs, message):
    """The config ships with the model and checks nothing itself; model_config_of (the toolkit's
    loaders call it before building a model) gives ModelConfig's one-line errors."""
    config = TutorialTransformerConfig(**kwargs)
    with pytest.raises(UserError) as err:
        model_config_of(config)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_config_mirrors_model_config_and_hf_names():
    cfg = tiny_config(norm_first=True, tie_output=False)
    config = hf_config_of(cfg)
    assert model_config_of(config) == cfg
    assert config.is_encoder_decoder and config.decoder_start_token_id == cfg.bos_id
    assert (config.num_hidden_layers, config.d_model, config.vocab_size) == (2, 32, 30)
    assert (config.pad_id, config.tie_output) == (0, False)  # ModelConfig's names work too


@pytest.mark.parametrize(
    "overrides", [{}, {"norm_first": True}, {"share_embeddings": True}, {"tie_output": False}]
)
def test_save_then_auto_load_round_trip(tmp_path, padded_batch, overrides):
    model = hf_tiny(**overrides)
    model.save_pretrained(tmp_path)
    assert {"config.json", "generation_config.json", "model.safetensors"} <= {
        p.name for p in tmp_path.iterdir()
    }
    assert type(AutoConfig.from_pretrained(tmp_path)) is TutorialTransformerConfig
    loaded, info = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, output_loading_info=True)
    assert type(loaded) is TutorialTransformerForConditionalGeneration
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    src, tgt = padded_batch
    with torch.no_grad():
        expected = model(input_ids=src, decoder_input_ids=tgt).logits
        got = loaded.eval()(input_ids=src, decoder_input_ids=tgt).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=0)  # positions table rebuilt exactly
    tied = loaded.lm_head.weight is loaded.model.decoder.embed_tokens.weight
    assert tied == (overrides.get("tie_output", True))
    assert loaded.generation_config.suppress_tokens == [0, 1]


def test_eager_and_sdpa_agree_and_eager_returns_attentions(padded_batch):
    src, tgt = padded_batch
    sdpa, eager = hf_tiny("sdpa"), hf_tiny("eager")
    with torch.no_grad():
        fast = sdpa(input_ids=src, decoder_input_ids=tgt).logits
        out = eager(input_ids=src, decoder_input_ids=tgt, output_attentions=True, output_hidden_states=True)
    torch.testing.assert_close(out.logits, fast, rtol=1e-4, atol=5e-5)
    assert len(out.encoder_attentions) == len(out.decoder_attentions) == len(out.cross_attentions) == 2
    assert out.encoder_attentions[0].shape == (3, 4, 7, 7)
    assert out.cross_attentions[1].shape == (3, 4, 6, 7)
    assert out.encoder_attentions[0][0, :, :, 5:].abs().max() == 0  # source padding gets no weight
    assert out.decoder_attentions[0][:, :, 0, 1:].abs().max() == 0  # look-ahead mask
    assert len(out.encoder_hidden_states) == 3
    with pytest.raises(ValueError, match="needs the eager attention kernel"):
        sdpa(input_ids=src, decoder_input_ids=tgt, output_attentions=True)


def test_generate_with_and_without_cache_agree(batch):
    src, _ = batch
    model = hf_tiny()
    for kwargs in ({"num_beams": 1}, {"num_beams": 4, "length_penalty": 0.6}):
        cached = model.generate(src, max_new_tokens=12, use_cache=True, **kwargs)
        full = model.generate(src, max_new_tokens=12, use_cache=False, **kwargs)
        assert torch.equal(cached, full), kwargs
    sampled = []
    for use_cache in (True, False):
        torch.manual_seed(3)
        sampled.append(model.generate(src, max_new_tokens=12, do_sample=True, top_k=5, use_cache=use_cache))
    assert torch.equal(*sampled)
    assert not torch.isin(cached[:, 1:], torch.tensor([1])).any()  # BOS is never generated


def test_forward_returns_a_real_cache_and_incremental_decoding_matches(batch):
    src, tgt = batch
    model = hf_tiny()
    with torch.no_grad():
        full = model(input_ids=src, decoder_input_ids=tgt, use_cache=False).logits
        out = model(input_ids=src, decoder_input_ids=tgt[:, :3], use_cache=True)
        cache = out.cache
        assert type(cache).__name__ == "EncoderDecoderCache" and cache.get_seq_length() == 3
        steps = [out.logits]
        for t in range(3, tgt.size(1)):
            out = model(
                encoder_outputs=(out.encoder_last_hidden_state,),
                attention_mask=(src != 0).long(),
                decoder_input_ids=tgt[:, t : t + 1],
                use_cache=True,
                cache=cache,
            )
            assert out.cache is cache and cache.get_seq_length() == t + 1
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-5)


def test_labels_give_the_cross_entropy_loss(batch):
    src, tgt = batch
    model = hf_tiny()
    labels = torch.cat([tgt[:, 1:], torch.full((3, 1), 2)], dim=1)
    labels[0, -2:] = -100
    out = model(input_ids=src, labels=labels)
    expected = F.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    decoder_input = model.prepare_decoder_input_ids_from_labels(labels)
    assert decoder_input[:, 0].eq(1).all() and decoder_input[0, -1] == 0  # BOS first, -100 -> PAD


def test_selfcheck_entries_pass():
    from huggingface_version.selfcheck import HF_CHECKS
    from selfcheck import run_selfcheck

    assert run_selfcheck(HF_CHECKS[:3]) == 0  # the fourth, a Trainer run, is test_hf_training.py's job
