"The diffusion UNets (miniai.models.unet): shapes, timestep embedding values, round trips, parameter counts."
import copy, math
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from miniai.models.attention import SelfAttention2D
from miniai.models.unet import (timestep_embedding, DownBlock, UpBlock, Upsample, UNetModel,
                                EmbResBlock, EmbUNetModel, n_params)


pytestmark = pytest.mark.usefixtures('one_thread')


def tiny_unet(nfs=(8, 16, 16), **kw):
    torch.manual_seed(0)
    return EmbUNetModel(1, 1, nfs=nfs, num_layers=1, **{'attn_chans': 4, **kw})


# ---- timestep embedding -----------------------------------------------------------------------------------

def hand_embedding(t, dim, max_period=10000.):
    "Independent NumPy version of the formula: [sin(t f_j), cos(t f_j)], f_j = P^(-j/(H-1)), zero-padded if odd."
    h = dim // 2
    f = np.array([max_period ** (-j / (h - 1)) if h > 1 else 1. for j in range(h)])
    a = np.outer(np.asarray(t, dtype=np.float64), f)
    e = np.concatenate([np.sin(a), np.cos(a)], axis=1)
    return np.pad(e, ((0, 0), (0, dim % 2)))


@pytest.mark.parametrize('dim,max_period', [(16, 10000.), (7, 10000.), (32, 10.), (2, 1000.)])
def test_timestep_embedding_values(dim, max_period):
    t = [-3.5, 0., 0.25, 1., 42.]
    out = timestep_embedding(torch.tensor(t), dim, max_period)
    assert out.shape == (5, dim) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), hand_embedding(t, dim, max_period), atol=2e-5)


def test_timestep_embedding_known_numbers():
    # t=2, dim 4: frequencies 1 and 1e-4 -> [sin 2, sin 2e-4, cos 2, cos 2e-4]
    out = timestep_embedding(torch.tensor([2.]), 4)
    torch.testing.assert_close(out, torch.tensor([[math.sin(2), math.sin(2e-4), math.cos(2), math.cos(2e-4)]]))
    assert timestep_embedding(torch.tensor(0.3), 6).shape == (1, 6)       # a scalar works
    with pytest.raises(ValueError, match='scalar or a vector'): timestep_embedding(torch.zeros(2, 2), 4)
    with pytest.raises(ValueError, match='dim'): timestep_embedding(torch.zeros(2), 0)


def test_timestep_embedding_at_zero_and_fastest_slowest_frequencies():
    "t=0: sin half all 0, cos half all 1; column 0 is sin(t) (frequency 1), column h-1 is sin(t/max_period)."
    out = timestep_embedding(torch.zeros(3), 10)
    assert torch.equal(out, torch.cat([torch.zeros(3, 5), torch.ones(3, 5)], 1))
    t = torch.tensor([0.7, 3.])
    out = timestep_embedding(t, 10, max_period=50.)
    torch.testing.assert_close(out[:, 0], t.sin()); torch.testing.assert_close(out[:, 5], t.cos())
    torch.testing.assert_close(out[:, 4], (t / 50).sin()); torch.testing.assert_close(out[:, 9], (t / 50).cos())
    torch.testing.assert_close(timestep_embedding(t, 10), timestep_embedding(t, 10, max_period=10000.))   # the default

def test_timestep_embedding_checks_its_arguments():
    "A Python number works like a tensor; a period that is not a finite number > 1, or a non-finite `t`, is an error."
    torch.testing.assert_close(timestep_embedding(0.5, 4), timestep_embedding(torch.tensor([0.5]), 4))
    torch.testing.assert_close(timestep_embedding([0.5, 2], 4), timestep_embedding(torch.tensor([0.5, 2.]), 4))
    for bad in (float('nan'), float('inf'), 0, 1, -5., True, '10'):
        with pytest.raises(ValueError, match='max_period'): timestep_embedding(torch.tensor([0.5]), 4, max_period=bad)
    with pytest.raises(ValueError, match='finite'): timestep_embedding(torch.tensor([float('nan'), 1.]), 4)
    with pytest.raises(ValueError, match='dim'): timestep_embedding(torch.zeros(2), 4.0)


# ---- blocks and shapes ------------------------------------------------------------------------------------

@pytest.mark.parametrize('size', [28, 32, 7])
def test_blocks_shapes_and_skips(size):
    "One level of a UNet by hand: a down block's skips are consumed by the up blocks of its level and the one below."
    x = torch.randn(2, 4, size, size)
    skips = [x]                                  # what conv_in would have saved
    down = DownBlock(4, 8, add_down=True, num_layers=2)
    out = down(x, skips)
    half = (size + 1) // 2                       # stride 2, padding 1 rounds up
    assert out.shape == (2, 8, half, half)
    assert [tuple(s.shape) for s in skips] == [(2, 4, size, size)] + [(2, 8, size, size)] * 2 + [(2, 8, half, half)]
    below = UpBlock(8, 8, 8, add_up=True, num_layers=1)      # the level below consumes the downsampled skip ...
    y = below(out, skips)
    assert y.shape == (2, 8, size, size)                     # ... and upsamples to the next skip's (odd) size
    up = UpBlock(4, 8, 8, add_up=False, num_layers=3)        # num_layers + 1 res blocks
    res = up(y, skips)
    assert res.shape == (2, 8, size, size) and skips == []   # everything consumed


def test_upsample_is_nearest_then_conv():
    up = Upsample(3)
    x = torch.randn(1, 3, 4, 4)
    ref = up.conv(x.repeat_interleave(2, -1).repeat_interleave(2, -2))
    torch.testing.assert_close(up(x), ref)
    assert up(x, size=(7, 5)).shape == (1, 3, 7, 5)


@pytest.mark.parametrize('size', [28, 32, 9])
def test_unets_odd_and_even_sizes(size):
    x = torch.randn(2, 1, size, size)
    assert UNetModel(1, 2, nfs=(4, 8, 8), num_layers=2)(x).shape == (2, 2, size, size)
    assert tiny_unet()(x, torch.rand(2)).shape == (2, 1, size, size)


def test_emb_resblock_scale_and_shift():
    "With the projection's weights zeroed and its bias set, the block is conv2(conv1(x)*(1+s)+b) + idconv(x)."
    torch.manual_seed(0)
    blk = EmbResBlock(6, 4, 8).eval()
    s, b = torch.randn(8), torch.randn(8)
    with torch.no_grad():
        blk.emb_proj.weight.zero_(); blk.emb_proj.bias.copy_(torch.cat([s, b]))
        x = torch.randn(2, 4, 5, 5)
        ref = blk.conv2(blk.conv1(x) * (1 + s[:, None, None]) + b[:, None, None]) + blk.idconv(x)
        torch.testing.assert_close(blk(x, torch.randn(2, 6)), ref)


def test_emb_resblock_projects_the_silu_of_the_embedding():
    "With random projection weights: scale, shift = Linear(SiLU(emb)) split in two, applied as conv1(x)*(1+scale)+shift."
    torch.manual_seed(0)
    blk = EmbResBlock(6, 4, 8).eval()
    x, emb = torch.randn(2, 4, 5, 5), 3 * torch.randn(2, 6)        # large, mostly negative entries: SiLU matters
    with torch.no_grad():
        proj = (emb * torch.sigmoid(emb)) @ blk.emb_proj.weight.T + blk.emb_proj.bias   # SiLU and Linear by hand
        scale, shift = proj[:, :8, None, None], proj[:, 8:, None, None]
        ref = blk.conv2(blk.conv1(x) * (1 + scale) + shift) + blk.idconv(x)
        torch.testing.assert_close(blk(x, emb), ref)
        blk.emb_act = torch.nn.Identity()                           # the test sees a missing activation
        assert not torch.allclose(blk(x, emb), ref, atol=1e-3)


def attention_f64(sa: SelfAttention2D, x: torch.Tensor) -> torch.Tensor:
    "Self-attention over the pixels of `x` from scratch in float64: LayerNorm, qkv, per-head softmax(q k^T/sqrt(d)) v, proj."
    W = {k: v.detach().double() for k, v in sa.state_dict().items()}
    b, c, hh, ww = x.shape
    s = x.double().reshape(b, c, hh * ww).transpose(1, 2)                          # (B, S, C), pixels row by row
    s = (s - s.mean(-1, keepdim=True)) / (s.var(-1, unbiased=False, keepdim=True) + sa.norm.eps).sqrt()
    s = s * W['norm.weight'] + W['norm.bias']
    q, k, v = (s @ W['qkv.weight'].T + W['qkv.bias']).split(c, dim=-1)
    nh = sa.nheads; d = c // nh
    q, k, v = (o.reshape(b, hh * ww, nh, d) for o in (q, k, v))                  # head i owns channels i*d..(i+1)*d
    w = torch.softmax(torch.einsum('bqhd,bkhd->bhqk', q, k) / math.sqrt(d), dim=-1)   # each query's weights sum to 1 over keys
    o = torch.einsum('bhqk,bkhd->bqhd', w, v).reshape(b, hh * ww, c)
    o = o @ W['proj.weight'].T + W['proj.bias']
    return o.transpose(1, 2).reshape(b, c, hh, ww)


def test_emb_resblock_zero_convs_is_the_identity_path():
    "With conv2 (and the attention's output projection) zeroed, the block is its skip path: x, or idconv(x) if ni != nf."
    torch.manual_seed(0)
    x, emb = torch.randn(2, 8, 5, 5), torch.randn(2, 6)
    for blk in (EmbResBlock(6, 8).eval(), EmbResBlock(6, 8, attn_chans=4).eval(), EmbResBlock(6, 8, 4).eval()):
        with torch.no_grad():
            blk.conv2[-1].weight.zero_(); blk.conv2[-1].bias.zero_()
            if blk.attn is not None: blk.attn.proj.weight.zero_(); blk.attn.proj.bias.zero_()
            if isinstance(blk.idconv, torch.nn.Identity): torch.testing.assert_close(blk(x, emb), x)
            else: torch.testing.assert_close(blk(x, emb), blk.idconv(x))
    assert isinstance(EmbResBlock(6, 8).idconv, torch.nn.Identity) and isinstance(EmbResBlock(6, 8, 4).idconv, torch.nn.Conv2d)


def test_emb_resblock_attention_is_added_to_the_res_output():
    "With attention, the block is h + attn(h) with h the res block's output (attention checked from scratch in float64)."
    torch.manual_seed(0)
    blk = EmbResBlock(6, 4, 8, attn_chans=4).eval()
    x, emb = torch.randn(2, 4, 5, 3), torch.randn(2, 6)
    with torch.no_grad():
        scale, shift = blk.emb_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = blk.conv2(blk.conv1(x) * (1 + scale) + shift) + blk.idconv(x)
        ref = h.double() + attention_f64(blk.attn, h)
        torch.testing.assert_close(blk(x, emb).double(), ref, atol=1e-5, rtol=1e-5)


def test_upblock_concatenates_x_then_the_last_skip():
    "Each res block of an UpBlock sees cat([x, skips.pop()]) (x first), the last skip first; then upsampling to skips[-1]'s size."
    torch.manual_seed(0)
    up = UpBlock(4, 6, 8, add_up=True, num_layers=2).eval()
    x = torch.randn(1, 6, 5, 5)
    s_keep, s1, s2 = torch.randn(1, 3, 9, 9), torch.randn(1, 4, 5, 5), torch.randn(1, 8, 5, 5)
    skips = [s_keep, s1, s2]
    with torch.no_grad():
        y = up.resnets[0](torch.cat([x, s2], 1))
        y = up.resnets[1](torch.cat([y, s1], 1))
        ref = up.up.conv(F.interpolate(y, size=(9, 9), mode='nearest'))
        torch.testing.assert_close(up(x, skips), ref)
    assert len(skips) == 1 and skips[0] is s_keep


def hand_unet_forward(m: EmbUNetModel, x, t, c):
    "The forward pass of `tiny_unet(nfs=(8, 16, 16))` (num_layers=1) written out level by level, skips named."
    emb = m.emb_mlp(torch.from_numpy(hand_embedding(t.numpy(), 8)).float()) + m.cond_emb(c)
    x0 = m.conv_in(x)
    a0 = m.down_blocks[0].resnets[0](x0, emb); b0 = m.down_blocks[0].down(a0)
    a1 = m.down_blocks[1].resnets[0](b0, emb); b1 = m.down_blocks[1].down(a1)
    a2 = m.down_blocks[2].resnets[0](b1, emb)
    u = m.mid_block(a2, emb)
    u0, u1, u2 = m.up_blocks
    u = u0.resnets[1](torch.cat([u0.resnets[0](torch.cat([u, a2], 1), emb), b1], 1), emb)
    u = u0.up.conv(F.interpolate(u, size=a1.shape[-2:], mode='nearest'))
    u = u1.resnets[1](torch.cat([u1.resnets[0](torch.cat([u, a1], 1), emb), b0], 1), emb)
    u = u1.up.conv(F.interpolate(u, size=a0.shape[-2:], mode='nearest'))
    u = u2.resnets[1](torch.cat([u2.resnets[0](torch.cat([u, a0], 1), emb), x0], 1), emb)
    assert u2.up is None
    return m.conv_out(u)


def test_emb_unet_matches_hand_forward():
    "The whole model against the hand-written forward: embedding MLP + class embedding, per-sample t, skip wiring, middle."
    m = tiny_unet(n_classes=3).eval()
    x, t, c = torch.randn(3, 1, 9, 9), torch.tensor([0.05, 0.5, 3.]), torch.tensor([0, 2, 3])
    with torch.no_grad():
        torch.testing.assert_close(m(x, t, c), hand_unet_forward(m, x, t, c), atol=1e-5, rtol=1e-5)


def test_emb_unet_samples_are_independent_in_eval():
    "In eval mode each sample's output depends only on its own image, noise level and label (no mixing across the batch)."
    m = tiny_unet(n_classes=3).eval()
    x, t, c = torch.randn(3, 1, 8, 8), torch.tensor([0.05, 0.5, 3.]), torch.tensor([0, 2, 1])
    with torch.no_grad():
        out = m(x, t, c)
        for i in range(3): torch.testing.assert_close(out[i:i+1], m(x[i:i+1], t[i:i+1], c[i:i+1]), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(m(x[:1], t[:1], c[:1]), m(x[:1], t[:1], c[1:2]), atol=1e-4)   # the label matters

def test_embedding_changes_output():
    m = tiny_unet().eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(m(x, torch.tensor([0.1, 0.1])), m(x, torch.tensor([2., 2.])))
        torch.testing.assert_close(m(x, torch.tensor(0.5)), m(x, torch.tensor([0.5, 0.5])))   # broadcast


def test_attention_placement():
    m = EmbUNetModel(1, 1, nfs=(8, 16, 32, 64), num_layers=2, attn_chans=8, attn_start=1)
    def n_attn(blk): return sum(isinstance(o, SelfAttention2D) for o in blk.modules())
    assert [n_attn(b) for b in m.down_blocks] == [0, 2, 2, 2]
    assert [n_attn(b) for b in m.up_blocks] == [3, 3, 3, 0]
    assert n_attn(m.mid_block) == 0
    assert n_attn(EmbUNetModel(1, 1, nfs=(8, 16), attn_chans=8, mid_attn=True).mid_block) == 1
    assert n_attn(EmbUNetModel(1, 1, nfs=(8, 16, 32), attn_chans=0)) == 0
    m2 = EmbUNetModel(1, 1, nfs=(8, 16, 32, 64), num_layers=1, attn_chans=8, attn_start=2)
    assert [n_attn(b) for b in m2.down_blocks] == [0, 0, 1, 1] and [n_attn(b) for b in m2.up_blocks] == [2, 2, 0, 0]
    m3 = EmbUNetModel(1, 1, nfs=(8, 16), num_layers=1, attn_chans=8, attn_start=0)     # 0: attention everywhere
    assert [n_attn(b) for b in m3.down_blocks] == [1, 1] and [n_attn(b) for b in m3.up_blocks] == [2, 2]
    m4 = EmbUNetModel(1, 1, nfs=(8, 16), attn_chans=8, attn_start=2, mid_attn=True)    # len(nfs): the middle only
    assert n_attn(m4) == n_attn(m4.mid_block) == 1
    assert n_attn(EmbUNetModel(1, 1, nfs=(8, 16), attn_chans=0, attn_start=2)) == 0


@pytest.mark.parametrize('bad,msg', [(-1, 'attn_start'), (4, 'attn_start'), (1.5, 'attn_start'), (True, 'attn_start'),
                                     (3, 'places no attention')])
def test_attn_start_is_checked(bad, msg):
    "`attn_start` must be an int in 0..len(nfs); asking for attention (attn_chans > 0) that it places nowhere is an error."
    with pytest.raises((ValueError, TypeError), match=msg): EmbUNetModel(1, 1, nfs=(8, 16, 32), attn_chans=8, attn_start=bad)


def test_bad_inputs():
    m = tiny_unet(n_classes=3)
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r'\(B, 1, H, W\)'): m(torch.randn(2, 3, 8, 8), torch.rand(2))
    with pytest.raises(ValueError, match=r'\(B, 1, H, W\)'): m(torch.randn(1, 8, 8), torch.rand(2))
    with pytest.raises(TypeError, match='floating-point'): m(x.long(), torch.rand(2))
    with pytest.raises(ValueError, match=r'`t` must have shape \(2,\)'): m(x, torch.rand(3))
    with pytest.raises(ValueError, match=r'in 0..2 \(or 3, the null class\)'): m(x, torch.rand(2), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match='from -1 to 0'): m(x, torch.rand(2), torch.tensor([0, -1]))
    with pytest.raises(TypeError, match='integer tensor'): m(x, torch.rand(2), torch.tensor([0., 1.]))
    with pytest.raises(TypeError, match='integer tensor'): m(x, torch.rand(2), torch.tensor([True, False]))
    with pytest.raises(ValueError, match='unconditional model'): tiny_unet()(x, torch.rand(2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match='attn_chans'): EmbUNetModel(1, 1, nfs=(8, 16), attn_chans=3)
    with pytest.raises(ValueError, match='nfs'): EmbUNetModel(1, 1, nfs=())
    for kw, msg in [(dict(nfs=(8.0, 16.0)), 'nfs'), (dict(nfs=(8, True)), 'nfs'), (dict(attn_chans=8.0), 'attn_chans'),
                    (dict(num_layers=1.5), 'num_layers'), (dict(n_classes=2.5), 'n_classes')]:
        with pytest.raises((ValueError, TypeError), match=msg): EmbUNetModel(1, 1, **{'nfs': (8, 16), **kw})
    with pytest.raises((ValueError, TypeError), match='nfs'): UNetModel(1, 1, nfs=(8.0, 16.0))


@pytest.mark.parametrize('dtype', [torch.uint8, torch.int8, torch.int16, torch.int32])
def test_labels_of_any_integer_dtype(dtype):
    "Class labels of any integer dtype are cast to long: the same output as torch.long labels."
    m = tiny_unet(n_classes=3).eval()
    x, t, c = torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([2, 0])
    with torch.no_grad(): torch.testing.assert_close(m(x, t, c.to(dtype)), m(x, t, c))


def test_null_class_is_default():
    m = tiny_unet(n_classes=3).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    with torch.no_grad():
        torch.testing.assert_close(m(x, t), m(x, t, torch.tensor([3, 3])))
        assert not torch.allclose(m(x, t, torch.tensor([0, 1])), m(x, t))


# ---- round trips ------------------------------------------------------------------------------------------

def test_deepcopy_is_identical_and_independent():
    m = tiny_unet().eval()
    x, t = torch.randn(3, 1, 8, 8), torch.rand(3)
    with torch.no_grad():
        ref = m(x, t)
        m2 = copy.deepcopy(m)
        assert torch.equal(m2(x, t), ref)
        for p in m2.parameters(): p.mul_(0.5)          # changing the copy leaves the original alone
        assert torch.equal(m(x, t), ref) and not torch.equal(m2(x, t), ref)
    assert not any(isinstance(v, torch.Tensor) for mod in m.modules() for v in vars(mod).values()), \
        "no tensors stored as plain module attributes"


def test_state_dict_round_trip(tmp_path):
    m = tiny_unet(n_classes=4)
    m.train(); m(torch.randn(4, 1, 8, 8), torch.rand(4), torch.tensor([0, 1, 2, 4]))   # move BN running stats
    m.eval()
    torch.save(m.state_dict(), tmp_path / 'w.pt')
    m2 = tiny_unet(n_classes=4)
    m2.load_state_dict(torch.load(tmp_path / 'w.pt', weights_only=True))
    m2.eval()
    x, t, c = torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([1, 3])
    with torch.no_grad(): assert torch.equal(m2(x, t, c), m(x, t, c))


def test_torch_compile_round_trip():
    "Dynamo must capture the whole forward (skip list included) in one graph; the compiled model gives the same output."
    if not hasattr(torch, 'compile'): pytest.skip('torch.compile is not available')
    torch._dynamo.reset()
    m = tiny_unet(nfs=(4, 8), n_classes=2).eval()
    x, t, c = torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([0, 1])
    try: cm = torch.compile(m, backend='aot_eager', fullgraph=True)
    except Exception as e: pytest.skip(f'torch.compile unavailable here: {e}')
    with torch.no_grad():
        ref = m(x, t, c)
        torch.testing.assert_close(cm(x, t, c), ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(copy.deepcopy(cm)(x, t, c), ref, atol=1e-5, rtol=1e-5)


# ---- sizes and training -----------------------------------------------------------------------------------

def test_param_counts():
    "Counts of the standard configurations (hand counts from the lesson's code, + out_channels for our conv_out bias)."
    with torch.device('meta'):
        assert n_params(UNetModel(1, 1, (32, 64, 128, 256), 2)) == 12_315_745
        assert n_params(EmbUNetModel(1, 1, (32, 64, 128, 256), 2, attn_chans=0)) == 13_021_792 + 1
        assert n_params(EmbUNetModel(1, 1, (32, 64, 128, 256), 2, attn_chans=8, attn_start=1)) == 14_755_552 + 1
        assert n_params(EmbUNetModel(1, 1, (32, 64, 128, 256), 2, attn_chans=0, n_classes=10)) == 13_021_792 + 1 + 11*128
        assert n_params(EmbUNetModel(3, 3, (224, 448, 672, 896), 1)) == 175_946_400 + 3
        assert n_params(UNetModel(1, 1, (32, 64, 128, 256), 2).requires_grad_(False)) == 12_315_745   # frozen ones too


def test_resblock_count_formula():
    "Up blocks have num_layers+1 res blocks; every saved skip is consumed exactly once."
    m = UNetModel(1, 1, nfs=(4, 8, 8, 8), num_layers=3)
    assert [len(b.resnets) for b in m.down_blocks] == [3] * 4
    assert [len(b.resnets) for b in m.up_blocks] == [4] * 4
    n_skips = 1 + sum(len(b.resnets) + (b.down is not None) for b in m.down_blocks)
    assert n_skips == sum(len(b.resnets) for b in m.up_blocks)


def test_loss_goes_down():
    "A tiny EmbUNetModel fits a fixed denoising batch: the loss falls well below its starting value."
    m = tiny_unet(nfs=(8, 16), attn_chans=0)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(8, 1, 8, 8, generator=g) * 2 - 1
    t = torch.rand(8, generator=g)
    noise = torch.randn(8, 1, 8, 8, generator=g)
    xt = x0 * (1 - t[:, None, None, None]).sqrt() + noise * t[:, None, None, None].sqrt()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = F.mse_loss(m(xt, t), noise)
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_emb_unet_moves_t_and_labels_to_its_device():
    "Noise levels (and labels) made on the CPU work with a model elsewhere: the embedding moves them (meta stands in for a GPU)."
    m = EmbUNetModel(1, 1, nfs=(8, 16), num_layers=1, n_classes=3).to('meta').eval()
    x = torch.zeros(2, 1, 8, 8, device='meta')
    for t in (torch.ones(2), torch.tensor(0.5), 0.5):
        out = m(x, t, torch.tensor([0, 1]))
        assert out.device.type == 'meta' and out.shape == x.shape
