"""The llama3 and yarn RoPE types against independent formulas, not against the code the model calls.

llama3: Meta's ``apply_scaling`` of Llama 3.1 (wavelengths shorter than original_len / high_freq_factor
kept, longer than original_len / low_freq_factor divided by ``factor``, a smooth blend between). yarn: the
YaRN paper (Peng et al. 2023, sections 3.2-3.4) as its reference code computes it: the correction range
of dimension indices from beta_fast / beta_slow (floor / ceil), a linear ramp over those indices mixing
interpolated (divided by ``factor``) and extrapolated frequencies, and cos/sin multiplied by
0.1 * ln(factor) + 1. The model's cos/sin (what attention uses) are checked, end to end through a forward.
"""
import math

import pytest
import torch

from loopcoder.model_server.plt import IQuestPLTCoderConfig, IQuestPLTCoderForCausalLM
from loopcoder.model_server.plt.modeling import PLTRotaryEmbedding

HEAD_DIM, THETA = 64, 500000.0


def default_inv_freq(dim=HEAD_DIM, base=THETA):
    return [1.0 / base ** (2 * i / dim) for i in range(dim // 2)]


def llama3_inv_freq(factor, low_freq_factor, high_freq_factor, original):
    low_wavelen, high_wavelen = original / low_freq_factor, original / high_freq_factor
    out = []
    for freq in default_inv_freq():
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(freq)
        elif wavelen > low_wavelen:
            out.append(freq / factor)
        else:
            smooth = (original / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append((1 - smooth) * freq / factor + smooth * freq)
    return out, 1.0


def yarn_inv_freq(factor, original, beta_fast=32.0, beta_slow=1.0, dim=HEAD_DIM, base=THETA):
    def correction_dim(rotations):  # the dimension index whose wavelength fits ``rotations`` times in original
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(correction_dim(beta_fast)), 0)
    high = min(math.ceil(correction_dim(beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    out = []
    for i, freq in enumerate(default_inv_freq(dim, base)):
        ramp = min(max((i - low) / (high - low), 0.0), 1.0)  # 0: extrapolate (keep), 1: interpolate
        out.append(freq / factor * ramp + freq * (1 - ramp))
    return out, 0.1 * math.log(factor) + 1.0


CASES = {
    "llama3": ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192},
               lambda p: llama3_inv_freq(p["factor"], p["low_freq_factor"], p["high_freq_factor"],
                                         p["original_max_position_embeddings"])),
    "yarn": ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096},
             lambda p: yarn_inv_freq(p["factor"], p["original_max_position_embeddings"])),
    "yarn-betas": ({"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 2048,
                    "beta_fast": 16.0, "beta_slow": 2.0},
                   lambda p: yarn_inv_freq(p["factor"], p["original_max_position_embeddings"], 16.0, 2.0)),
}


def config(rope):
    return IQuestPLTCoderConfig(vocab_size=64, hidden_size=128, intermediate_size=64, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=1, head_dim=HEAD_DIM,
                                plt_window_size=[3, 0], max_position_embeddings=32768,
                                rope_parameters={"rope_theta": THETA, **rope})


@pytest.mark.parametrize("case", CASES)
def test_cos_sin_equal_the_independent_formula(case):
    rope, formula = CASES[case]
    inv, scale = formula(rope)
    # the scaled frequencies differ from plain RoPE (else the check would prove nothing)
    assert max(abs(a - b) / b for a, b in zip(inv, default_inv_freq())) > 0.5
    positions = torch.tensor([[0, 1, 7, 100, 4095, 20000]])
    cos, sin = PLTRotaryEmbedding(config(rope))(positions, torch.float32)
    angles = positions[0, :, None].double() * torch.tensor(inv, dtype=torch.float64)
    want_cos = torch.cat([angles.cos(), angles.cos()], -1) * scale
    want_sin = torch.cat([angles.sin(), angles.sin()], -1) * scale
    # float32 angles at position 20000 are good to about 2e-3 rad; the formula is exact in float64
    assert (cos[0].double() - want_cos).abs().max() < 5e-3
    assert (sin[0].double() - want_sin).abs().max() < 5e-3
    assert (cos[0, :3].double() - want_cos[:3]).abs().max() < 1e-6  # small positions: float32 exact


@pytest.mark.parametrize("case", CASES)
def test_forward_uses_the_scaled_rope(case):
    """The same weights with and without the scaling: attention at long positions must differ, and the
    model's rotary module is what the forward reads."""
    rope, formula = CASES[case]
    torch.manual_seed(0)
    scaled = IQuestPLTCoderForCausalLM(config(rope)).eval()
    plain = IQuestPLTCoderForCausalLM(config({"rope_type": "default"})).eval()
    plain.load_state_dict(scaled.state_dict())
    ids = torch.randint(0, 64, (1, 6))
    positions = torch.arange(3000, 3006)[None]
    with torch.no_grad():
        a = scaled(ids, position_ids=positions).logits
        b = plain(ids, position_ids=positions).logits
    assert (a - b).abs().max() > 1e-4
