"Properties of miniai.models found unpinned by a hand-made mutation check: each test kills a mutant the rest of the suite let live."
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from miniai.models import resnet
from miniai.models.resnet import AugmentCB, classifier_accuracy, random_crop
from miniai.models.simple_diffusion import EmbTransformerBlk, LearnEmbSS, TransformerMid
from miniai.models.unet import EmbUNetModel, UNetModel


def test_classifier_accuracy_evaluates_in_eval_mode_and_leaves_the_model_alone():
    "Accuracy uses BatchNorm's running statistics (eval mode), not batch statistics, and changes neither mode nor running stats."
    model = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(2)).train()   # eval: identity (running mean 0, var 1)
    x = torch.tensor([[10., 0.], [10., 1.], [10., 2.], [10., 3.]])[:, :, None, None]
    y = torch.zeros(4, dtype=torch.long)   # eval-mode logits ~ x: class 0 always wins
    # in training mode the batch statistics make column 0 zero and column 1 (-1.3, -0.4, 0.4, 1.3): accuracy 0.5
    assert classifier_accuracy(model, [(x, y)]) == 1.0
    assert model.training and model[1].training
    assert torch.equal(model[1].running_mean, torch.zeros(2)) and torch.equal(model[1].running_var, torch.ones(2))


def test_classifier_learner_passes_crop_pad_to_the_augmentation():
    "`crop_pad` reaches AugmentCB for values other than the default (3, and 0 for no crop)."
    kw = dict(bs=32, nfs=(8, 16), limit=(64, 32), device='cpu', progress=False)
    for pad in (3, 0):
        (a,) = [cb for cb in resnet.fashion_classifier_learner(crop_pad=pad, **kw).cbs if isinstance(cb, AugmentCB)]
        assert a.pad == pad


# ---------------------------------------------------------------- UNets (miniai.models.unet)
def _preact_ref(seq: nn.Sequential, h: torch.Tensor) -> torch.Tensor:
    "Independent pre-activation layer: eval-mode BatchNorm (if any) with the module's statistics, then F.silu, then conv/linear."
    norm, lin = (seq[0], seq[-1]) if len(seq) == 3 else (None, seq[-1])
    if norm is not None: h = F.batch_norm(h, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0., norm.eps)
    h = F.silu(h)
    if isinstance(lin, nn.Linear): return F.linear(h, lin.weight, lin.bias)
    return F.conv2d(h, lin.weight, lin.bias, stride=lin.stride, padding=lin.padding)


@pytest.mark.parametrize('make', [lambda: UNetModel(1, 2, nfs=(4, 8), num_layers=1),
                                  lambda: EmbUNetModel(1, 2, nfs=(4, 8), num_layers=1, attn_chans=0, n_classes=3)])
def test_unet_pre_activation_layers_are_norm_silu_then_conv(make):
    "Every pre-activation layer of the UNets (res-block convs, conv_out, embedding MLP) computes conv(silu(norm(h)))."
    torch.manual_seed(0)
    model = make().eval()
    seqs = [m for m in model.modules() if isinstance(m, nn.Sequential) and len(m) >= 2 and isinstance(m[-1], (nn.Conv2d, nn.Linear))]
    assert model.conv_out in seqs and len(seqs) >= 7
    with torch.no_grad():
        for m in model.modules():   # non-trivial running statistics, so that the norm is not the identity
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)): m.running_mean.normal_(); m.running_var.uniform_(0.5, 2.)
        for seq in seqs:
            lin = seq[-1]
            h = 2*torch.randn(3, lin.in_features) if isinstance(lin, nn.Linear) else 2*torch.randn(3, lin.in_channels, 5, 5)
            torch.testing.assert_close(seq(h), _preact_ref(seq, h), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- simple diffusion (miniai.models.simple_diffusion)
def test_learn_emb_ss_scales_then_shifts_the_same_element():
    "LearnEmbSS is x*(1 + scale) + shift elementwise, also where scale and shift are both set (not (x + shift)*(1 + scale))."
    e, x = LearnEmbSS(3, 2), torch.randn(4, 3, 2)
    with torch.no_grad(): e.scale.copy_(torch.randn(3, 2)); e.shift.copy_(torch.randn(3, 2))
    torch.testing.assert_close(e(x), x*(1 + e.scale.detach()) + e.shift.detach())


def test_emb_transformer_blk_mlp_branch_by_hand():
    "With the attention and embedding branches zeroed: out = x + Linear(LN(GELU(Linear(LN(x))))) (the MLP written out in float64)."
    torch.manual_seed(0)
    blk = EmbTransformerBlk(4, 8, 4).double()
    for lin in (blk.attn.proj, blk.emb_proj): nn.init.zeros_(lin.weight); nn.init.zeros_(lin.bias)
    l1, ln, l2 = blk.mlp[0], blk.mlp[2], blk.mlp[3]
    with torch.no_grad():
        for n in (blk.norm, ln): n.weight.normal_(); n.bias.normal_()   # not the identity: each norm's parameters matter
        x, e = 3*torch.randn(2, 5, 8, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
        h = F.layer_norm(x, (8,), blk.norm.weight, blk.norm.bias, blk.norm.eps)
        h = F.linear(F.layer_norm(F.gelu(F.linear(h, l1.weight, l1.bias)), (32,), ln.weight, ln.bias, ln.eps), l2.weight, l2.bias)
        torch.testing.assert_close(blk(x, e), x + h)


def test_transformer_mid_scales_and_shifts_tokens_before_the_blocks():
    "TransformerMid = blocks(LearnEmbSS(row-major tokens of x)), reshaped back: the position embedding comes first."
    torch.manual_seed(0)
    mid = TransformerMid(4, 8, (2, 3), n_mids=2, attn_chans=4).eval()
    with torch.no_grad():
        mid.pos.scale.normal_(); mid.pos.shift.normal_()
        x, e = torch.randn(2, 8, 2, 3), torch.randn(2, 4)
        tok = x.flatten(2).transpose(1, 2) * (1 + mid.pos.scale) + mid.pos.shift     # (B, 6, C), token k = row*3 + col
        for blk in mid.blocks: tok = blk(tok, e)
        torch.testing.assert_close(mid(x, e), tok.transpose(1, 2).reshape(2, 8, 2, 3))


def test_unet_model_matches_hand_forward():
    "UNetModel (no time input) against its forward written out: middle block, and every skip incl. conv_in's to the last up block."
    torch.manual_seed(0)
    m = UNetModel(1, 2, nfs=(4, 8), num_layers=1).eval()
    x = torch.randn(2, 1, 7, 7)
    with torch.no_grad():
        d0, d1 = m.down_blocks
        x0 = m.conv_in(x)
        a0 = d0.resnets[0](x0); b0 = d0.down(a0); a1 = d1.resnets[0](b0)
        assert d1.down is None
        u = m.mid_block(a1)
        u0, u1 = m.up_blocks
        u = u0.resnets[1](torch.cat([u0.resnets[0](torch.cat([u, a1], 1)), b0], 1))
        u = u0.up.conv(F.interpolate(u, size=(7, 7), mode='nearest'))
        u = u1.resnets[1](torch.cat([u1.resnets[0](torch.cat([u, a0], 1)), x0], 1))
        torch.testing.assert_close(m(x), m.conv_out(u))


# ---------------------------------------------------------------- augmentation (miniai.models.resnet)
def test_random_crop_default_padding_repeats_the_border():
    "fill=None pads by repeating the border pixel (index clamping), not by reflection: each output is a window of that."
    torch.manual_seed(0)
    x, pad = torch.randn(64, 1, 5, 6), 2
    ri, ci = torch.arange(-pad, 5 + pad).clamp(0, 4), torch.arange(-pad, 6 + pad).clamp(0, 5)
    xp = x[:, :, ri][:, :, :, ci]                       # replicate padding by hand
    y = random_crop(x, pad)
    found = set()
    for i in range(len(x)):
        hits = [(r, c) for r in range(2*pad + 1) for c in range(2*pad + 1) if torch.equal(y[i], xp[i, :, r:r+5, c:c+6])]
        assert hits, f"image {i} is not a window of the border-repeated image"
        found.add(hits[0])
    assert len(found) > 10 and any(r in (0, 2*pad) or c in (0, 2*pad) for r, c in found)   # reaches the padded edges


def test_augment_cb_passes_its_settings_to_the_augmentations():
    "AugmentCB uses its own flip_p, erase_max and fill (not the augmentations' defaults)."
    torch.manual_seed(0)
    x = torch.randn(64, 1, 10, 10)
    assert torch.equal(AugmentCB(pad=0, flip_p=1.).augment_images(x), x.flip(-1))           # flip_p=1: every image
    diff = (AugmentCB(pad=0, flip_p=0., erase_p=1., erase_max=0.2).augment_images(x) != x)[:, 0]
    assert diff.any(2).sum(1).max() <= 2 and diff.any(1).sum(1).max() <= 2                   # ceil(0.2 * 10) = 2
    y = AugmentCB(pad=2, flip_p=0., fill=7.).augment_images(x)
    assert (y == 7.).flatten(1).any(1).float().mean() > 0.5                                  # shifted images show the fill


def test_emb_transformer_blk_attention_comes_before_the_scale_and_shift():
    "MLP branch zeroed: out = (x + attn(x))*(1 + scale) + shift, with scale, shift = Linear(silu(emb)) (attention first)."
    torch.manual_seed(0)
    blk = EmbTransformerBlk(4, 8, 4).double()
    nn.init.zeros_(blk.mlp[-1].weight); nn.init.zeros_(blk.mlp[-1].bias)
    with torch.no_grad():
        x, e = torch.randn(2, 5, 8, dtype=torch.float64), 2*torch.randn(2, 4, dtype=torch.float64)
        p = F.linear(e * torch.sigmoid(e), blk.emb_proj.weight, blk.emb_proj.bias)[:, None]
        torch.testing.assert_close(blk(x, e), (x + blk.attn(x))*(1 + p[..., :8]) + p[..., 8:])


def test_bottom_grid_accepts_size_one():
    "_bottom_grid takes a side of 1 pixel (a degenerate but valid size) and refuses 0."
    from miniai.models.simple_diffusion import _bottom_grid
    assert _bottom_grid((1, 8), 3) == (1, 2) and _bottom_grid(1, 2) == (1, 1)
    with pytest.raises(ValueError): _bottom_grid((0, 8), 3)
