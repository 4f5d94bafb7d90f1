"Self-attention (miniai.models.attention): agreement with PyTorch's MultiheadAttention and a hand-written formula."
import math
import pytest
import torch
from torch import nn
from miniai.models.attention import SelfAttention, SelfAttention2D


pytestmark = pytest.mark.usefixtures('one_thread')


def copy_to_mha(sa: SelfAttention) -> nn.MultiheadAttention:
    "An `nn.MultiheadAttention` holding `sa`'s projection weights."
    mha = nn.MultiheadAttention(sa.ni, num_heads=sa.nheads, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(sa.qkv.weight); mha.in_proj_bias.copy_(sa.qkv.bias)
        mha.out_proj.weight.copy_(sa.proj.weight); mha.out_proj.bias.copy_(sa.proj.bias)
    return mha


def manual_attention(sa: SelfAttention, x: torch.Tensor) -> torch.Tensor:
    "Multi-head attention written out with explicit loops over heads (no SDPA, no einops)."
    h = sa.norm(x)
    q, k, v = (h @ sa.qkv.weight.T + sa.qkv.bias).chunk(3, dim=-1)
    d = sa.ni // sa.nheads
    outs = []
    for i in range(sa.nheads):
        qi, ki, vi = (o[..., i*d:(i+1)*d] for o in (q, k, v))
        w = torch.softmax(qi @ ki.transpose(-1, -2) / math.sqrt(d), dim=-1)
        outs.append(w @ vi)
    return torch.cat(outs, dim=-1) @ sa.proj.weight.T + sa.proj.bias


@pytest.mark.parametrize('ni,attn_chans', [(32, 8), (32, 32), (24, 4), (16, 1)])
def test_matches_multihead_attention(ni, attn_chans):
    torch.manual_seed(0)
    sa = SelfAttention(ni, attn_chans)
    x = torch.randn(3, 20, ni)
    with torch.no_grad():
        h = sa.norm(x)
        ref = copy_to_mha(sa)(h, h, h, need_weights=False)[0]
        out = sa(x)
    assert sa.nheads == ni // attn_chans
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_matches_hand_formula():
    torch.manual_seed(1)
    sa = SelfAttention(32, 8)
    x = torch.randn(2, 50, 32)
    with torch.no_grad():
        torch.testing.assert_close(sa(x), manual_attention(sa, x), atol=1e-5, rtol=1e-5)


def test_2d_is_1d_on_flattened_pixels():
    torch.manual_seed(2)
    sa2 = SelfAttention2D(16, 4)
    x = torch.randn(2, 16, 5, 7)   # non-square, odd sizes
    with torch.no_grad():
        out = sa2(x)
        seq = x.flatten(2).transpose(1, 2)                       # (B, H*W, C)
        ref = SelfAttention.forward(sa2, seq).transpose(1, 2).reshape(x.shape)
    assert out.shape == x.shape
    torch.testing.assert_close(out, ref)


def test_permutation_equivariance():
    "Self-attention has no notion of position: permuting the pixels permutes the output."
    torch.manual_seed(3)
    sa = SelfAttention(16, 8)
    x = torch.randn(2, 30, 16)
    perm = torch.randperm(30)
    with torch.no_grad():
        torch.testing.assert_close(sa(x)[:, perm], sa(x[:, perm]), atol=1e-6, rtol=1e-5)


def test_attends_to_far_positions():
    "Changing one far-away position changes every output (unlike a 3x3 conv)."
    torch.manual_seed(4)
    sa = SelfAttention2D(8, 4)
    x = torch.randn(1, 8, 16, 16)
    x2 = x.clone(); x2[0, 0, 15, 15] += 5   # one channel (LayerNorm removes a shift of all channels)
    with torch.no_grad(): diff = (sa(x) - sa(x2)).abs().sum(1)[0]
    assert diff[0, 0] > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match='positive divisor'): SelfAttention(32, 5)
    with pytest.raises(ValueError, match='positive divisor'): SelfAttention(32, 0)
    with pytest.raises(ValueError, match=r'expects \(batch, 8, H, W\)'): SelfAttention2D(8, 4)(torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match=r'expects \(batch, seq, 8\)'): SelfAttention(8, 4)(torch.randn(1, 3, 3, 8))


def einsum_attention_f64(sa: SelfAttention, x: torch.Tensor) -> torch.Tensor:
    "From scratch in float64 with einsum: LayerNorm, qkv, heads as consecutive channel groups, softmax over keys, proj."
    W = {k: v.detach().double() for k, v in sa.state_dict().items()}
    x = x.double()
    b, s, c = x.shape
    h = (x - x.mean(-1, keepdim=True)) / (x.var(-1, unbiased=False, keepdim=True) + sa.norm.eps).sqrt()
    h = h * W['norm.weight'] + W['norm.bias']
    q, k, v = (h @ W['qkv.weight'].T + W['qkv.bias']).split(c, dim=-1)
    d = c // sa.nheads
    q, k, v = (o.reshape(b, s, sa.nheads, d) for o in (q, k, v))
    w = torch.softmax(torch.einsum('bqhd,bkhd->bhqk', q, k) / math.sqrt(d), dim=-1)
    return torch.einsum('bhqk,bkhd->bqhd', w, v).reshape(b, s, c) @ W['proj.weight'].T + W['proj.bias']


@pytest.mark.parametrize('ni,attn_chans', [(16, 4), (12, 12)])
def test_matches_float64_einsum(ni, attn_chans):
    "In float64 the module and the from-scratch formula agree to 1e-10 (scaling 1/sqrt(d), softmax axis, head layout)."
    torch.manual_seed(5)
    sa = SelfAttention(ni, attn_chans).double()
    with torch.no_grad():                       # non-trivial LayerNorm affine and larger weights: sharper attention
        sa.norm.weight.uniform_(0.5, 2); sa.norm.bias.normal_(); sa.qkv.weight.mul_(3)
    x = torch.randn(2, 17, ni, dtype=torch.float64)
    with torch.no_grad(): torch.testing.assert_close(sa(x), einsum_attention_f64(sa, x), atol=1e-10, rtol=1e-10)


def test_weights_sum_to_one_over_keys():
    "If every position has the same value vector, attention returns it whatever q and k are: each query's weights sum to 1."
    torch.manual_seed(6)
    sa = SelfAttention(8, 4)
    with torch.no_grad():
        sa.qkv.weight[16:].zero_()                 # v = its bias, the same at every position
        sa.qkv.weight[:16].mul_(4)                 # sharp, uneven q.k scores
        x = torch.randn(2, 11, 8)
        ref = sa.proj(sa.qkv.bias[16:]).expand(2, 11, 8)
        torch.testing.assert_close(sa(x), ref, atol=1e-5, rtol=1e-5)


def test_2d_attention_has_no_residual():
    "SelfAttention2D returns the attention alone (EmbResBlock adds the residual): a zero output projection gives zeros."
    torch.manual_seed(7)
    sa2 = SelfAttention2D(8, 4)
    with torch.no_grad():
        sa2.proj.weight.zero_(); sa2.proj.bias.zero_()
        assert torch.equal(sa2(torch.randn(1, 8, 3, 4)), torch.zeros(1, 8, 3, 4))
