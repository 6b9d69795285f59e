"""The assembled course model: config validation, parameter counts, forward contract, MTP, cache, training."""
import pytest
import torch
import torch.nn.functional as F

from helpers.model import Block, ModelConfig, MTPModule, RMSNorm, Transformer, count_params, deepseek_v3_config

SMALL = dict(vocab_size=64, dim=32, n_heads=2, q_lora_rank=16, kv_lora_rank=8, qk_nope_head_dim=8,
             qk_rope_head_dim=4, v_head_dim=8, inter_dim=48, moe_inter_dim=16, max_seq_len=32)


def small(**kw):
    return ModelConfig.cpu(**{**SMALL, **kw})


@pytest.mark.parametrize("changes,match", [
    (dict(kv_lora_rank=200), "kv_lora_rank"),
    (dict(n_activated_experts=9), "n_activated_experts"),
    (dict(attn="mha", dim=130, n_heads=4), "not divisible by n_heads"),
    (dict(attn="gqa", n_heads=4, n_kv_heads=3), "not divisible by n_kv_heads"),
    (dict(attn="mha", n_kv_heads=2), "attn='gqa'"),
    (dict(n_limited_groups=3), "n_limited_groups"),
    (dict(n_routed_experts=6, n_expert_groups=4), "not divisible by n_expert_groups"),
    (dict(n_activated_experts=5, n_expert_groups=2, n_limited_groups=1), "impossible inside"),
    (dict(qk_rope_head_dim=7), "even"),
    (dict(attn="mha", dim=12, n_heads=4), "odd"),
    (dict(n_dense_layers=9), "n_dense_layers"),
    (dict(balance="sometimes"), "balance"),
    (dict(attn="xla"), "attn must be"),
    (dict(dim=0), "dim"),
    (dict(q_lora_rank=500), "q_lora_rank"),
    (dict(init_std=0.0), "init_std"),
    (dict(bias_update_speed=-1.0), "bias_update_speed"),
])
def test_config_validation(changes, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig.cpu(**changes)


def test_presets():
    assert ModelConfig() == ModelConfig.cpu()
    tiny = Transformer(ModelConfig.dense_tiny()).num_params()
    assert tiny["total"] < 1_000_000 and tiny["total"] == tiny["active"]
    cpu = ModelConfig.cpu()
    assert (cpu.attn, cpu.n_dense_layers, cpu.n_routed_experts, cpu.n_shared_experts, cpu.n_activated_experts,
            cpu.mtp_depth, cpu.mtp_lambda) == ("mla", 1, 8, 1, 2, 1, 0.3)
    assert count_params(ModelConfig.gpu())["total"] > 5 * count_params(cpu)["total"]
    assert ModelConfig.cpu(dim=256).dim == 256 and cpu.replace(n_layers=2).n_layers == 2
    fast = ModelConfig.cpu_fast()                               # the course model, shallower and without MTP
    assert fast == cpu.replace(n_layers=3, mtp_depth=0) and ModelConfig.cpu_fast(n_layers=4).n_layers == 4


@pytest.mark.parametrize("kw", [dict(), dict(attn="mha", n_routed_experts=0), dict(attn="gqa", n_kv_heads=1),
                                dict(q_lora_rank=0, mtp_depth=2), dict(n_dense_layers=0, n_shared_experts=0),
                                dict(mtp_depth=0, n_shared_experts=2)])
def test_num_params_equals_formula(kw):
    cfg = small(**kw)
    m = Transformer(cfg)
    counted, formula = m.num_params(), count_params(cfg)
    for key in ("total", "active", "total_main", "active_main", "mtp", "embedding", "head"):
        assert counted[key] == formula[key], key
    assert counted["total"] == sum(p.numel() for p in m.parameters())


def test_deepseek_v3_counts():
    c = count_params(deepseek_v3_config())
    assert abs(c["total_main"] / 671e9 - 1) < 0.01          # 671B, MTP excluded
    assert 37e9 <= c["active_main"] < 38e9                  # the report's "37B" (rounded down)
    assert abs(c["mtp"] / 11.5e9 - 1) < 0.01                # the MTP module's own 11.5B (shared emb/head excluded)


def test_forward_contract_and_losses():
    torch.manual_seed(0)
    cfg = small(mtp_depth=2, mtp_lambda=0.5, balance="seq_aux", seq_aux_alpha=0.01)
    m = Transformer(cfg)
    x = torch.randint(0, 64, (3, 12))
    y = torch.randint(0, 64, (3, 12))
    out = m(x, targets=y, return_hidden=True)
    assert out["logits"].shape == (3, 12, 64)
    main = F.cross_entropy(out["logits"].reshape(-1, 64), y.reshape(-1))
    torch.testing.assert_close(out["main_loss"], main)
    # MTP by hand: depth k uses h^{k-1}[:, :T-k] and Emb(x[:, k:]), predicts y[:, k:]
    h, freqs, losses = out["hidden"], m.freqs_cis("cpu"), []
    for k, mod in enumerate(m.mtp, 1):
        hn = m.mtp[k - 1].block(mod.eh_proj(torch.cat([mod.hnorm(h[:, :12 - k]), mod.enorm(m.embed(x[:, k:]))], -1)),
                                freqs[:12 - k])
        losses.append(F.cross_entropy(m.head(m.norm(hn)).reshape(-1, 64), y[:, k:].reshape(-1)))
        h = hn
    torch.testing.assert_close(out["mtp_loss"], torch.stack(losses).mean())
    assert out["aux_loss"].item() > 0
    torch.testing.assert_close(out["loss"], out["main_loss"] + 0.5 * out["mtp_loss"] + out["aux_loss"])
    no_mtp = Transformer(small(mtp_depth=0, balance="none"))(x, targets=y)
    assert no_mtp["mtp_loss"].item() == 0 and no_mtp["aux_loss"].item() == 0
    torch.testing.assert_close(no_mtp["loss"], no_mtp["main_loss"])


def test_sharing_embedding_and_head():
    m = Transformer(small(mtp_depth=1))
    assert m.embed.weight.data_ptr() != m.head.weight.data_ptr()           # not tied to each other
    names = [n for n, _ in m.mtp.named_parameters()]
    assert not any("embed" in n or n.startswith("head") for n in names)    # MTP owns no embedding/head
    assert isinstance(m.mtp[0], MTPModule) and m.mtp[0].depth == 1 and isinstance(m.layers[0], Block)
    assert isinstance(m.norm, RMSNorm)


@pytest.mark.parametrize("attn", ["mla", "mha", "gqa"])
def test_causal_and_cached_generation(attn):
    torch.manual_seed(0)
    m = Transformer(small(attn=attn, n_kv_heads=1 if attn == "gqa" else 0)).eval()
    x = torch.randint(0, 64, (2, 10))
    x2 = x.clone()
    x2[:, 6:] = (x2[:, 6:] + 1) % 64
    with torch.no_grad():
        a, b = m(x)["logits"], m(x2)["logits"]
    torch.testing.assert_close(a[:, :6], b[:, :6])                           # future tokens never leak
    assert not torch.allclose(a[:, 6:], b[:, 6:])
    g1, g2 = m.generate(x[:, :4], 8, temperature=0), m.generate(x[:, :4], 8, temperature=0, use_cache=False)
    assert torch.equal(g1, g2) and g1.shape == (2, 12)
    assert m.cache_bytes() == 0                                              # cache released after generate


def test_absorbed_model_equals_naive_and_cache_bytes():
    torch.manual_seed(1)
    m = Transformer(small()).eval()
    x = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        a = m(x)["logits"]
        m.set_attn_impl("absorb")
        torch.testing.assert_close(m(x)["logits"], a, atol=1e-5, rtol=1e-5)
    cfg = m.cfg
    m.setup_cache(2, 16)
    assert m.cache_bytes() == 2 * 16 * cfg.n_layers * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * 4
    m.clear_cache()


def test_errors():
    m = Transformer(small())
    with pytest.raises(ValueError, match="max_seq_len"):
        m(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="targets shape"):
        m(torch.zeros(1, 8, dtype=torch.long), targets=torch.zeros(1, 7, dtype=torch.long))
    with pytest.raises(TypeError):
        Transformer({"dim": 3})


def test_trains_and_balances():
    torch.manual_seed(0)
    cfg = small(balance="aux_free", bias_update_speed=0.01)
    m = Transformer(cfg)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    x = torch.randint(0, 64, (8, 16))
    y = torch.roll(x, -1, 1)
    first = None
    for _ in range(30):
        out = m(x, targets=y)
        out["loss"].backward()
        opt.step()
        opt.zero_grad()
        m.after_step()
        first = first if first is not None else out["main_loss"].item()
    assert out["main_loss"].item() < first - 1.0
    loads = m.expert_loads()
    assert loads.shape == (cfg.n_layers - cfg.n_dense_layers + cfg.mtp_depth, cfg.n_routed_experts)
    assert loads[:-1].sum(-1).eq(8 * 16 * 2).all()                        # main MoE layers: every token, K = 2
    assert loads[-1].sum().item() == 8 * 15 * 2                              # MTP depth 1 sees T − 1 positions
    assert all(l.gate.bias.abs().sum() > 0 for l in m.moe_layers())


def test_router_gets_gradient_and_determinism():
    def run():
        torch.manual_seed(3)
        m = Transformer(small())
        out = m(torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0)),
                targets=torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1)))
        out["loss"].backward()
        return m, out["loss"].item()
    m, a = run()
    _, b = run()
    assert a == b
    assert m.layers[-1].ffn.gate.weight.grad.abs().sum() > 0
