"""The float Transformer++ is a Llama: mmf.TransformerLM(weights='float') against Hugging Face
`transformers`' LlamaForCausalLM holding the very same weights (loaded by state-dict name, strictly),
in float64: logits and the gradient of every parameter tensor. Dev-only (transformers, torch); built
from a tiny local LlamaConfig, no network.

Hugging Face's Llama keeps three steps in float32 whatever the model dtype (a mixed-precision
safeguard): RMSNorm's statistics, the rotary cos/sin tables and the eager attention softmax. The
strict test therefore runs the SDPA attention (float64 throughout) and replaces the other two with
their float64 equivalents; a second test runs the model untouched, where those float32 steps bound
the agreement at ~1e-6.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from transformers.models.llama import modeling_llama  # noqa: E402

import mmf  # noqa: E402

torch.set_num_threads(1)      # tiny tensors: extra threads only wait on a busy 2-core machine

CFG = dict(vocab_size=29, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=24, rope_theta=500.0,
           rms_norm_eps=1e-5)


def mmf_problem(seed=0):
    model = mmf.TransformerLM(mmf.TransformerConfig(**CFG), seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed)
    for name, p in model.params.items():                      # attention far from uniform, gains away from 1
        model.params[name] = (1 + 0.2 * rng.standard_normal(p.shape)) if name.endswith("norm.weight") \
            else 10 * p
    ids, targets = rng.integers(0, CFG["vocab_size"], (2, 2, 7))
    return model, ids, targets


def llama_with(params, attn_implementation):
    c = CFG
    hf_config = transformers.LlamaConfig(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
        num_hidden_layers=c["num_layers"], num_attention_heads=c["num_heads"], num_key_value_heads=c["num_heads"],
        rms_norm_eps=c["rms_norm_eps"], rope_theta=c["rope_theta"], max_position_embeddings=64,
        tie_word_embeddings=False, attention_bias=False, mlp_bias=False, hidden_act="silu",
        attn_implementation=attn_implementation)
    hf = transformers.LlamaForCausalLM(hf_config).to(torch.float64)
    hf.load_state_dict({k: torch.tensor(v) for k, v in params.items()}, strict=True)   # every name must match
    return hf


def hf_logits_loss_grads(hf, ids, targets):
    hf.zero_grad()
    logits = hf(input_ids=torch.as_tensor(ids)).logits                              # (B, T, V)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             torch.as_tensor(targets).reshape(-1))   # mmf's E11: no shift
    loss.backward()
    grads = {k: p.grad.numpy() for k, p in hf.named_parameters()}
    return logits.detach().numpy(), float(loss.detach()), grads


def rel(a, b):
    return float(np.linalg.norm(a - b) / (np.linalg.norm(a) + np.linalg.norm(b)))


def float64_rmsnorm(self, hidden_states):
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


def float64_rotary(self, x, position_ids):
    dim = self.config.hidden_size // self.config.num_attention_heads
    inv_freq = 1.0 / self.config.rope_parameters["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    freqs = position_ids[..., None].to(torch.float64) * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def test_float_transformer_equals_hf_llama_in_float64(monkeypatch):
    monkeypatch.setattr(modeling_llama.LlamaRMSNorm, "forward", float64_rmsnorm)
    monkeypatch.setattr(modeling_llama.LlamaRotaryEmbedding, "forward", float64_rotary)
    model, ids, targets = mmf_problem()
    hf = llama_with(dict(model.params), "sdpa")
    logits, loss, grads = hf_logits_loss_grads(hf, ids, targets)
    ours_loss, ours_grads = model.loss_and_grads(ids, targets)
    assert set(grads) == set(ours_grads)                                          # every parameter compared
    assert rel(model.forward(ids), logits) < 1e-13 and abs(ours_loss - loss) < 1e-13 * loss
    errs = {k: rel(ours_grads[k], grads[k]) for k in grads}
    assert max(errs.values()) < 1e-12, errs
    # negative control: the same comparison sees a changed weight
    model.params["model.layers.1.self_attn.k_proj.weight"][0, 0] += 1e-3
    assert rel(model.forward(ids), logits) > 1e-9


def test_float_transformer_equals_untouched_hf_llama():
    """No patches, HF's eager attention: its float32 norm statistics, rotary tables and softmax bound
    the agreement (observed ~1e-7)."""
    model, ids, targets = mmf_problem(seed=1)
    logits, loss, grads = hf_logits_loss_grads(llama_with(dict(model.params), "eager"), ids, targets)
    ours_loss, ours_grads = model.loss_and_grads(ids, targets)
    assert rel(model.forward(ids), logits) < 1e-5
    assert max(rel(ours_grads[k], grads[k]) for k in grads) < 1e-5


def test_hf_refuses_a_bitnet_layout():
    """The quantized variants add '<proj>.norm.weight' tensors Llama does not have (they are not Llamas)."""
    model = mmf.TransformerLM(mmf.TransformerConfig(**{**CFG, "weights": "ternary"}), dtype=np.float64)
    with pytest.raises(RuntimeError, match="Unexpected key.*q_proj.norm.weight"):
        llama_with(dict(model.params), "sdpa")
