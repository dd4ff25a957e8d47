import pytest
import torch

from lmfuse.core.loading import load_model, load_model_and_tokenizer, load_tokenizer, resolve_dtype
from lmfuse.errors import ConfigError, ModelNotFoundError


def test_loads_saved_tiny_model_with_dtype(tiny_llama_dir):
    model, tok = load_model_and_tokenizer(tiny_llama_dir, dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and not model.training
    assert tok.padding_side == "left" and tok.pad_token == "<pad>"


@pytest.mark.parametrize("arch", ["mistral", "qwen2"])
def test_tokenizer_survives_round_trip_for_every_arch(tmp_path, arch):
    from lmfuse import testing

    d = testing.save_tiny(tmp_path / arch, arch)
    tok = load_tokenizer(d)
    assert tok.tokenize("Q: 1+") == ["Q", ":", " ", "1", "+"]
    assert load_model(d).config.model_type == arch


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="model not found at") as info:
        load_model(tmp_path / "nope")
    assert "zoo" in str(info.value)


def test_missing_hub_id_offline_is_a_clear_error():
    with pytest.raises(ModelNotFoundError, match="not a local directory.*Download it first"):
        load_model("nobody-here/no-such-model-xyz")


def test_bad_dtype_names_the_allowed_values():
    with pytest.raises(ConfigError, match="dtype: expected one of auto, float32"):
        resolve_dtype("int3")
