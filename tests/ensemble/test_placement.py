"""Members on their own devices; logits combined on one."""

from __future__ import annotations

import copy

import pytest
import torch

from lmfuse.ensemble import Ensemble
from lmfuse.testing import save_tiny

from .conftest import PROMPTS


def test_devices_per_member_when_loading(tmp_path, tok):
    a = save_tiny(tmp_path / "a", "llama", tok, seed=1)
    b = save_tiny(tmp_path / "b", "qwen2", tok, seed=2)
    ens = Ensemble([str(a), str(b)], devices=["cpu", "cpu"], device="cpu", dtype="float32")
    assert [m.device.type for m in ens.members] == ["cpu", "cpu"] and ens.device == torch.device("cpu")
    assert len(ens.generate(PROMPTS, max_new_tokens=4)) == len(PROMPTS)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_members_on_different_devices_match_cpu(models, tok, bpe):
    cpu_pair = [(models["llama"], tok), (models["mistral"], tok)]
    expected = Ensemble(cpu_pair).generate(PROMPTS, max_new_tokens=12)
    mixed = [(copy.deepcopy(models["llama"]).cuda(), tok), (models["mistral"], tok)]
    ens = Ensemble(mixed, device="cuda:0")  # member 0 on the GPU, member 1 on the CPU
    assert ens.generate(PROMPTS, max_new_tokens=12) == expected
    ens_cpu_combine = Ensemble(mixed, device="cpu")
    assert ens_cpu_combine.generate(PROMPTS, max_new_tokens=12) == expected
