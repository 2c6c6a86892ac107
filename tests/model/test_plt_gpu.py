"""The PLT model on a CUDA GPU: Triton kernel path against the plain torch path (run on the device machine:
see docs/gpu.md). Marked gpu, so `make test` leaves it out."""
import pytest
import torch

from loopcoder.model_server.plt import IQuestPLTCoderConfig, IQuestPLTCoderForCausalLM

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _model():
    torch.manual_seed(0)
    config = IQuestPLTCoderConfig(vocab_size=1024, hidden_size=512, intermediate_size=1024, num_hidden_layers=2,
                                  num_attention_heads=8, num_key_value_heads=2, head_dim=64,
                                  plt_window_size=[64, 0], plt_emb_scale=0.707, plt_hidden_scale=0.053,
                                  plt_gate_use_hidden_states=True)
    return IQuestPLTCoderForCausalLM(config).to("cuda", torch.bfloat16).eval()


def test_triton_path_matches_torch_path_prefill_and_decode():
    model = _model()
    ids = torch.randint(1, 1024, (3, 300), device="cuda")
    logits = {}
    for impl in ("torch", "kernels"):
        model.model.attention_impl = impl
        with torch.no_grad():
            cache = model.new_cache()
            parts = [model(ids[:, :200], past_key_values=cache).logits]
            parts += [model(ids[:, t: t + 1], past_key_values=cache).logits for t in range(200, 300)]
        logits[impl] = torch.cat(parts, 1).float()
    ref, got = logits["torch"], logits["kernels"]
    rel = ((got - ref).norm() / ref.norm()).item()
    agree = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
    print(f"relative error {rel:.2e}, top-1 agreement {agree:.4f}")
    assert rel < 2e-2 and agree > 0.97


def test_generate_on_cuda_uses_the_kernels():
    model = _model()
    ids = torch.randint(1, 1024, (2, 40), device="cuda")
    with torch.no_grad():
        model.model.attention_impl = "auto"
        out = model.generate(ids, max_new_tokens=16, do_sample=False, pad_token_id=0)
    assert out.shape == (2, 56)
