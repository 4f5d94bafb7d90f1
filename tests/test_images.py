"RGB image sets (notebook 14b): held-out split, every source kind, clear errors for missing data, the FID classifier."
import os
from pathlib import Path
import numpy as np
import pytest
import torch
from miniai.core import set_seed
import miniai.data as md
from miniai.data import CorruptDataError, MissingDataError
from miniai.images import (ImageFeatures, class_balanced_split, image_classifier, image_fid_eval, image_set_paths,
                           images_to_float, images_to_uint8, load_image_set, resize_images, train_image_classifier)


def rand_images(n, h=8, w=8, seed=0, channels_last=True):
    x = np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    return x if channels_last else x.transpose(0, 3, 1, 2)


def test_class_balanced_split():
    y = torch.tensor([0]*200 + [1]*40 + [2]*5 + [3]*2 + [4]*1)
    tr, te = class_balanced_split(y, 0.1, seed=3)
    assert torch.bincount(y[te], minlength=5).tolist() == [20, 4, 1, 1, 0]   # 10% rounded, >= 1, never a whole class
    assert len(set(tr.tolist()) & set(te.tolist())) == 0 and len(tr) + len(te) == len(y)
    assert torch.equal(class_balanced_split(y, 0.1, seed=3)[1], te)
    picks = [set(class_balanced_split(y, 0.1, seed=s)[1].tolist()) for s in range(3)]
    assert picks[0] != picks[1] != picks[2]                                  # random within each class
    for bad in (0, 1, -0.1): pytest.raises(ValueError, class_balanced_split, y, bad)


def test_npz_images_labels(tmp_path):
    x, y = rand_images(60), np.repeat(np.arange(3), 20).astype(np.int16)
    p = tmp_path/'set.npz'
    np.savez(p, images=x, labels=y, class_names=np.array(['a', 'b', 'c']))
    s = load_image_set(p, test_frac=0.25)
    assert s.train_x.dtype == torch.uint8 and s.shape == (3, 8, 8) and s.class_names == ['a', 'b', 'c']
    assert torch.bincount(s.test_y).tolist() == [5, 5, 5] and len(s.train_x) == 45
    # every image is in exactly one split, unchanged (HWC -> CHW)
    all_x = torch.cat([s.train_x, s.test_x]).permute(0, 2, 3, 1).reshape(60, -1)
    assert sorted(map(bytes, all_x.numpy())) == sorted(map(bytes, x.reshape(60, -1)))
    np.savez(tmp_path/'grey.npz', images=x[..., 0])           # grey, no labels: 3 equal channels, one class
    g = load_image_set(tmp_path/'grey.npz', test_frac=0.5)
    assert g.shape == (3, 8, 8) and g.n_classes == 1 and torch.equal(g.train_x[:, 0], g.train_x[:, 2])


def test_npz_with_own_split_and_resize(tmp_path):
    p = tmp_path/'cifar.npz'
    np.savez(p, x_train=rand_images(10, 12, 16), y_train=np.arange(10) % 2, x_test=rand_images(4, 12, 16, seed=1),
             y_test=np.array([0, 1, 1, 0]))
    s = load_image_set(p, size=6)
    assert (len(s.train_x), len(s.test_x)) == (10, 4) and s.shape == (3, 6, 6) and s.test_y.tolist() == [0, 1, 1, 0]


def test_resize_and_conversions():
    x = torch.full((2, 3, 10, 14), 77, dtype=torch.uint8)
    assert torch.equal(resize_images(x, 5), torch.full((2, 3, 5, 5), 77, dtype=torch.uint8))   # constants stay
    ramp = torch.arange(14, dtype=torch.uint8).expand(1, 3, 10, 14)
    assert torch.equal(resize_images(ramp, 10), ramp[..., 2:12])                            # centre crop, no resize
    u = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(images_to_uint8(images_to_float(u)), u) and images_to_float(u)[[0, -1]].tolist() == [-1., 1.]


def test_image_folder(tmp_path):
    from PIL import Image
    for cls, n in (('cats', 3), ('dogs', 4)):
        (tmp_path/cls).mkdir()
        for i in range(n): Image.fromarray(rand_images(1, 20, 30, seed=i)[0]).save(tmp_path/cls/f'{i}.png')
    s = load_image_set(tmp_path, size=8, test_frac=0.3, progress=False)
    assert s.class_names == ['cats', 'dogs'] and s.shape == (3, 8, 8)
    assert torch.bincount(torch.cat([s.train_y, s.test_y])).tolist() == [3, 4] and len(s.test_x) == 2
    Image.fromarray(rand_images(1, 8, 8)[0]).save(tmp_path/'dogs'/'small.png')
    with pytest.raises(ValueError, match='pass `size=`'): load_image_set(tmp_path, progress=False)
    (tmp_path/'dogs'/'broken.jpg').write_bytes(b'not a jpeg')
    with pytest.raises(CorruptDataError, match='broken.jpg'): load_image_set(tmp_path, size=8, progress=False)


def test_hf_dataset():
    import datasets
    from PIL import Image
    feats = datasets.Features({'img': datasets.Image(), 'label': datasets.ClassLabel(names=['x', 'y'])})
    ims = [Image.fromarray(a) for a in rand_images(10, 8, 8)]
    ds = datasets.Dataset.from_dict({'img': ims, 'label': [0, 1]*5}, features=feats)
    s = load_image_set(ds, test_frac=0.2, progress=False)
    assert s.class_names == ['x', 'y'] and len(s.test_x) == 2 and s.shape == (3, 8, 8)
    dd = datasets.DatasetDict(train=ds, test=ds.select(range(3)))
    s = load_image_set(dd, progress=False)
    assert (len(s.train_x), len(s.test_x)) == (10, 3)
    s = load_image_set(datasets.DatasetDict(train=ds, validation=ds.select(range(4))), progress=False)   # no 'test' split
    assert (len(s.train_x), len(s.test_x)) == (10, 4)
    with pytest.raises(ValueError, match=r"needs a 'train' split and a 'test' \(or 'validation'\) split"):
        load_image_set(datasets.DatasetDict(a=ds, b=ds), progress=False)
    with pytest.raises(ValueError, match='no Image column'):
        load_image_set(datasets.Dataset.from_dict({'a': [1, 2]}), progress=False)


def test_missing_data_errors(tmp_path, monkeypatch):
    monkeypatch.delenv('MINIAI_DATA', raising=False)
    with pytest.raises(MissingDataError, match='nowhere: no `data_dir` given and MINIAI_DATA unset'):
        load_image_set('clothing64', allow_sample=False)
    monkeypatch.setenv('MINIAI_DATA', str(tmp_path/'data'))
    with pytest.raises(MissingDataError) as e: load_image_set('clothing64', data_dir=tmp_path/'mine')
    for p in image_set_paths('clothing64', tmp_path/'mine'): assert str(p) in str(e.value)   # every path tried is named
    assert image_set_paths('clothing64', tmp_path/'mine') == [tmp_path/'mine'/'clothing64.npz', tmp_path/'mine'/'rgb64'/'clothing64.npz']
    assert str(tmp_path/'data') not in str(e.value) and 'only `data_dir` is searched' in str(e.value)   # never $MINIAI_DATA's copy
    with pytest.raises(MissingDataError) as e: load_image_set('clothing64', allow_sample=False)
    assert str(tmp_path/'data'/'rgb64'/'clothing64.npz') in str(e.value)                    # without `data_dir`: $MINIAI_DATA
    with pytest.raises(MissingDataError, match='no such .npz file or folder'): load_image_set(tmp_path/'nope.npz')
    (tmp_path/'empty').mkdir()
    with pytest.raises(MissingDataError, match='no image files'): load_image_set(tmp_path/'empty')
    np.savez(tmp_path/'bad.npz', pixels=np.zeros(3))
    with pytest.raises(CorruptDataError, match=r"holds \['pixels'\]"): load_image_set(tmp_path/'bad.npz')
    (tmp_path/'junk.npz').write_bytes(b'junk')
    with pytest.raises(CorruptDataError, match='cannot be read'): load_image_set(tmp_path/'junk.npz')
    np.savez(tmp_path/'float.npz', images=np.zeros((4, 8, 8, 3), np.float32))
    with pytest.raises(CorruptDataError, match='must be uint8'): load_image_set(tmp_path/'float.npz')
    with pytest.raises(TypeError): load_image_set(42)
    import datasets
    def offline(name, *a, **k): raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)")
    monkeypatch.setattr(datasets, 'load_dataset', offline)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')   # the same message with or without a network here
    with pytest.raises(MissingDataError, match="'someone/x' could not be loaded.*HF_HUB_OFFLINE is set, and `someone/x` is not in the local"):
        load_image_set('hf:someone/x')


@pytest.mark.skipif(not os.environ.get('MINIAI_DATA') or
                    not (Path(os.environ.get('MINIAI_DATA', '.'))/'rgb64'/'clothing64.npz').exists(), reason='needs $MINIAI_DATA/rgb64')
def test_clothing64():
    s = load_image_set('clothing64')
    assert len(s.train_x) + len(s.test_x) == 5398 and s.shape == (3, 64, 64) and s.n_classes == 20
    assert 0.14 < len(s.test_x)/5398 < 0.16 and (torch.bincount(s.test_y, minlength=20) >= 1).all()
    sums = s.train_x.sum((0, 2, 3), dtype=torch.int64) + s.test_x.sum((0, 2, 3), dtype=torch.int64)
    assert np.allclose((sums.double()/(5398*64*64*255)).numpy(), [0.5364, 0.4685, 0.4561], atol=6e-5)   # the data README's means


def test_classifier_learns_and_features():
    "Red-ish vs blue-ish noise images: a tiny classifier separates them; features have the last width."
    set_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 120, (96, 3, 16, 16), generator=g, dtype=torch.uint8)
    y = torch.arange(96) % 2
    x[y == 0, 0] += 120; x[y == 1, 2] += 120
    from miniai.images import ImageSet
    s = ImageSet(x[:64], y[:64], x[64:], y[64:], ['red', 'blue'], 'synthetic')
    model, acc = train_image_classifier(s, epochs=2, bs=16, nfs=(4, 8), device='cpu', progress=False)
    assert acc > 0.9
    f = ImageFeatures(model).eval()
    assert f(images_to_float(x[:3])).shape == (3, 8)
    with pytest.raises(ValueError, match=r'\(\*, 3, \*, \*\)'): f(torch.zeros(2, 1, 16, 16))
    model.train()
    ie = image_fid_eval(model, s.test_x)
    assert not any(m.training for m in model.modules())   # the whole classifier in eval mode, head included
    assert ie.fid(images_to_float(s.test_x)) == pytest.approx(0, abs=1e-6)      # the reference against itself
    assert ie.fid(images_to_float(s.test_x[s.test_y == 0])) > 1                  # one class only: far from the mix
    with pytest.raises(ValueError): image_classifier(0)


# ---------------------------------------------------------------- details found by mutation testing
def test_resize_crops_rows_centrally_and_chunks_do_not_matter():
    tall = torch.arange(14, dtype=torch.uint8).view(1, 1, 14, 1).expand(1, 3, 14, 10)
    assert torch.equal(resize_images(tall, 10), tall[:, :, 2:12])                          # centre crop of the rows too
    x = torch.from_numpy(rand_images(5, 12, 12, channels_last=False))
    assert torch.equal(resize_images(x, 4, chunk=2), torch.cat([resize_images(x[i:i+1], 4) for i in range(5)]))


def test_resize_matches_pil_bicubic():
    "Downsizing 40 -> 8 agrees with PIL's (antialiased) bicubic resize to within 1 grey level."
    from PIL import Image
    x = rand_images(1, 40, 40, seed=2)
    ref = np.asarray(Image.fromarray(x[0]).resize((8, 8), Image.BICUBIC)).astype(int)
    out = resize_images(torch.from_numpy(x).permute(0, 3, 1, 2), 8)[0].permute(1, 2, 0).numpy().astype(int)
    assert np.abs(out - ref).max() <= 1


def test_images_to_uint8_clamps():
    assert images_to_uint8(torch.tensor([-3., -1., 0., 1., 2.5])).tolist() == [0, 0, 128, 255, 255]


def test_npz_rgba_drops_alpha_and_negative_labels_fail(tmp_path):
    x = rand_images(6)
    rgba = np.concatenate([x, np.zeros_like(x[..., :1])], -1)
    np.savez(tmp_path/'rgba.npz', images=rgba)
    s = load_image_set(tmp_path/'rgba.npz', test_frac=0.5)
    got = torch.cat([s.train_x, s.test_x]).permute(0, 2, 3, 1).reshape(6, -1)
    assert sorted(map(bytes, got.numpy())) == sorted(map(bytes, x.reshape(6, -1)))      # RGB kept, alpha dropped
    np.savez(tmp_path/'neg.npz', images=x, labels=np.array([0, 1, -1, 0, 1, 0]))
    with pytest.raises(CorruptDataError, match='negative'): load_image_set(tmp_path/'neg.npz')


def test_limit_takes_class_balanced_subsets(tmp_path):
    x, y = rand_images(60), np.repeat(np.arange(3), 20)
    np.savez(tmp_path/'set.npz', images=x, labels=y)
    full = load_image_set(tmp_path/'set.npz', test_frac=0.5)
    s = load_image_set(tmp_path/'set.npz', test_frac=0.5, limit=(6, 3))
    assert torch.bincount(s.train_y).tolist() == [2, 2, 2] and torch.bincount(s.test_y).tolist() == [1, 1, 1]
    train_rows, test_rows = (set(map(bytes, a.reshape(len(a), -1).numpy())) for a in (full.train_x, full.test_x))
    assert all(bytes(r) in train_rows for r in s.train_x.reshape(6, -1).numpy())            # subsets of their own split
    assert all(bytes(r) in test_rows for r in s.test_x.reshape(3, -1).numpy())
    s = load_image_set(tmp_path/'set.npz', test_frac=0.5, limit=(None, 100))
    assert (len(s.train_x), len(s.test_x)) == (30, 30)


def test_limit_keeps_every_class_even_a_rare_one(tmp_path):
    "A class-balanced `limit` keeps at least one item of each class, even of a class with a single test image."
    y = np.array([0]*40 + [1]*40 + [2]*2)          # class 2: one train and one test image (test_frac=0.5)
    np.savez(tmp_path/'set.npz', images=rand_images(len(y)), labels=y)
    s = load_image_set(tmp_path/'set.npz', test_frac=0.5, limit=(8, 4))
    assert torch.bincount(s.test_y, minlength=3).tolist() == [2, 2, 1]
    assert torch.bincount(s.train_y, minlength=3).tolist() == [4, 4, 1]


def test_hf_prefers_test_split_over_validation():
    import datasets
    from PIL import Image
    ds = datasets.Dataset.from_dict({'img': [Image.fromarray(a) for a in rand_images(6, 8, 8)]},
                                    features=datasets.Features({'img': datasets.Image()}))
    s = load_image_set(datasets.DatasetDict(train=ds, validation=ds.select(range(4)), test=ds.select(range(3))), progress=False)
    assert (len(s.train_x), len(s.test_x)) == (6, 3) and s.class_names == ['all']


def test_image_dls_full_shuffled_train_batches_and_all_test_images():
    from miniai.images import ImageSet, image_dls
    x, y = torch.from_numpy(rand_images(15, channels_last=False)), torch.arange(15) % 3
    dls = image_dls(ImageSet(x[:10], y[:10], x[10:], y[10:], ['a', 'b', 'c'], 'synthetic'), bs=4, device='cpu', seed=0)
    assert [len(b[1]) for b in dls.train] == [4, 4]                                          # the short last batch dropped
    xb, yb = map(torch.cat, zip(*dls.valid))
    assert torch.equal(yb, y[10:]) and torch.allclose(xb, x[10:].double().div(127.5).sub(1).float(), atol=1e-6)


# ---------------------------------------------------------------- the simple-diffusion UNet (notebook 17; no test file of its own)
def _zero_branches(blk):
    "Zero the attention output, the MLP's last layer and the embedding projection: the block's residual branches."
    for lin in (blk.attn.proj, blk.mlp[-1], blk.emb_proj): torch.nn.init.zeros_(lin.weight); torch.nn.init.zeros_(lin.bias)
    return blk


def test_learn_emb_ss_starts_as_identity_and_checks_shape():
    from miniai.models.simple_diffusion import LearnEmbSS
    e, x = LearnEmbSS(3, 2), torch.randn(4, 3, 2)
    assert torch.equal(e(x), x)                                          # zero-initialised: x*(1+0) + 0
    with torch.no_grad(): e.scale[1, 0], e.shift[2, 1] = 1., 5.
    want = x.clone(); want[:, 1, 0] *= 2; want[:, 2, 1] += 5
    torch.testing.assert_close(e(x), want)
    with pytest.raises(ValueError, match=r'expects \(batch, 3, 2\)'): e(torch.randn(4, 2, 3))


def test_emb_transformer_blk_scale_shift_from_silu_of_embedding():
    "With the residual branches at zero and emb_proj = identity: x*(1 + silu(e)[:C]) + silu(e)[C:]."
    from miniai.models.simple_diffusion import EmbTransformerBlk
    blk = _zero_branches(EmbTransformerBlk(16, 8, 4))
    with torch.no_grad(): blk.emb_proj.weight.copy_(torch.eye(16))
    x, e = torch.randn(2, 5, 8, dtype=torch.float64), torch.randn(2, 16, dtype=torch.float64)
    se = e/(1 + torch.exp(-e))
    want = x*(1 + se[:, None, :8]) + se[:, None, 8:]
    torch.testing.assert_close(blk.double()(x, e), want)


def test_emb_transformer_blk_keeps_the_attention_residual():
    "Attention branch only (MLP and emb branches at zero): the output is x + attn(x), not attn(x)."
    from miniai.models.simple_diffusion import EmbTransformerBlk
    blk = EmbTransformerBlk(4, 8, 4)
    for lin in (blk.mlp[-1], blk.emb_proj): torch.nn.init.zeros_(lin.weight); torch.nn.init.zeros_(lin.bias)
    x = torch.randn(2, 5, 8)
    with torch.no_grad(): torch.testing.assert_close(blk(x, torch.randn(2, 4)) - x, blk.attn(x))


def test_emb_transformer_blk_mlp_sees_normalised_tokens():
    "MLP branch only: it sees LayerNorm(x), so f(c*x) - c*x == f(x) - x for any c > 0."
    from miniai.models.simple_diffusion import EmbTransformerBlk
    blk = EmbTransformerBlk(4, 8, 4)
    for lin in (blk.attn.proj, blk.emb_proj): torch.nn.init.zeros_(lin.weight); torch.nn.init.zeros_(lin.bias)
    x, e = torch.randn(2, 5, 8), torch.randn(2, 4)
    with torch.no_grad(): torch.testing.assert_close(blk(10*x, e) - 10*x, blk(x, e) - x, atol=1e-4, rtol=1e-4)


def test_transformer_mid_keeps_pixel_positions_on_a_wide_grid():
    "Identity blocks: TransformerMid is x + shift of the pixel's own (row-major) token, on a non-square grid."
    from miniai.models.simple_diffusion import TransformerMid
    mid = TransformerMid(4, 8, (2, 3), n_mids=2, attn_chans=4)
    for blk in mid.blocks: _zero_branches(blk)
    x, e = torch.randn(2, 8, 2, 3), torch.randn(2, 4)
    with torch.no_grad():
        torch.testing.assert_close(mid(x, e), x)
        mid.pos.shift[:, 0] = torch.arange(6.)                       # token k = row*3 + col gets +k on channel 0
        want = x.clone(); want[:, 0] += torch.arange(6.).view(2, 3)
        torch.testing.assert_close(mid(x, e), want)


def test_simple_diffusion_grid_and_mid_settings():
    import math
    from miniai.models.attention import SelfAttention2D
    from miniai.models.simple_diffusion import SimpleDiffusion
    m = SimpleDiffusion(nfs=(4, 8, 16), img_size=(30, 18), n_mids=3, mid_attn_chans=4)
    assert m.grid == (math.ceil(math.ceil(30/2)/2), math.ceil(math.ceil(18/2)/2)) == (8, 5)   # stride-2, padding-1 convs
    assert len(m.mid_block.blocks) == 3 and m.mid_block.blocks[0].attn.nheads == 16//4
    assert not any(isinstance(mod, SelfAttention2D) for mod in m.modules())                    # no conv attention


def test_init_simple_diffusion_makes_res_blocks_their_shortcut():
    "After init every res block is its shortcut plus a constant (the zeroed conv's bias), whatever the input."
    from miniai.models.simple_diffusion import SimpleDiffusion, init_simple_diffusion
    m = init_simple_diffusion(SimpleDiffusion(nfs=(4, 8), img_size=8, n_mids=1, mid_attn_chans=4)).eval()
    emb = torch.randn(2, 16)
    with torch.no_grad():
        for r in (m.down_blocks[1].resnets[0], m.up_blocks[0].resnets[0]):
            ni = r.conv1[-1].in_channels
            d1, d2 = ((r(x, emb) - r.idconv(x)) for x in (torch.randn(2, ni, 4, 4), 3*torch.randn(2, ni, 4, 4)))
            torch.testing.assert_close(d1, d2)                                          # independent of the input...
            torch.testing.assert_close(d1, d1[:, :, :1, :1].expand_as(d1))               # ...and of the position


def test_load_image_set_checks_limit_and_size_first(tmp_path, monkeypatch):
    "A bad `limit` or `size` is refused before any file is read (a named set that is nowhere would otherwise fail first)."
    monkeypatch.delenv('MINIAI_DATA', raising=False)
    for limit in ((0, 0), (-5, 10), (10,), (1.5, 2), 'all', (True, 3)):
        with pytest.raises(ValueError, match='`limit` must'): load_image_set('clothing64', limit=limit)
    for size, err in ((0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(err, match='`size` must be'): load_image_set('clothing64', size=size)
    x = rand_images(40, channels_last=True); np.savez(tmp_path/'s.npz', images=x, labels=np.arange(40) % 4)
    s = load_image_set(tmp_path/'s.npz', limit=8, test_frac=0.25)     # an int limits both splits
    assert (len(s.train_y), len(s.test_y)) == (8, 8)


def test_shipped_clothing_sample_and_the_quick_fallback(tmp_path, monkeypatch, capsys):
    "The shipped sample holds all 20 classes at 32x32; quick mode falls back to it only when no `data_dir` is given."
    monkeypatch.delenv('MINIAI_DATA', raising=False)
    monkeypatch.setattr(md, '_sample_noted', set())
    s = load_image_set('clothing64', sample=True)
    assert (len(s.train_y) + len(s.test_y), s.shape, len(s.class_names)) == (329, (3, 32, 32), 20)
    assert set(torch.cat([s.train_y, s.test_y]).tolist()) == set(range(20)) and capsys.readouterr().out == ''
    monkeypatch.setenv('MINIAI_QUICK', '1')
    q = load_image_set('clothing64', size=16, limit=(100, 30))
    assert 'Note: full clothing64 not found' in capsys.readouterr().out and q.source.endswith('clothing64_sample.npz')
    assert q.shape == (3, 16, 16) and 95 <= len(q.train_y) <= 105                 # a class-balanced subset of the sample
    with pytest.raises(MissingDataError): load_image_set('clothing64', data_dir=tmp_path)  # never instead of the copy asked for
    with pytest.raises(MissingDataError): load_image_set('clothing64', allow_sample=False)
    monkeypatch.setenv('MINIAI_QUICK', '0')
    with pytest.raises(MissingDataError, match='sample=True'): load_image_set('clothing64')  # full size: no substitution
    with pytest.raises(ValueError, match='needs a named set with a shipped sample'): load_image_set('cifar10', sample=True)


def test_image_dls_shuffle_follows_the_seed():
    "The training loader's order is set by `seed`: the same seed repeats it, another seed changes it."
    from miniai.images import ImageSet, image_dls
    x = torch.arange(32, dtype=torch.uint8).view(32, 1, 1, 1).expand(32, 3, 2, 2).contiguous()
    s = ImageSet(x, torch.arange(32), x[:4], torch.arange(4), [str(i) for i in range(32)], 'synthetic')
    first = lambda seed: next(iter(image_dls(s, bs=8, device='cpu', seed=seed).train))[1]
    assert torch.equal(first(1), first(1)) and not torch.equal(first(1), first(2))


def test_as_rgb_nhwc_height_two():
    "Channels-last images 2 pixels high are read as channels-last RGB, not as 2 channels."
    from miniai.images import _as_rgb
    x = np.arange(2*2*5*3, dtype=np.uint8).reshape(2, 2, 5, 3)   # (N, H=2, W=5, C=3)
    out = _as_rgb(x, 'test')
    assert out.shape == (2, 3, 2, 5) and torch.equal(out, torch.as_tensor(x).permute(0, 3, 1, 2))


def test_train_image_classifier_callbacks_on_the_cpu(monkeypatch):
    "On the CPU the classifier trains in float32 (no mixed precision); a progress bar only when asked."
    import miniai.images as mi
    from miniai.accel import MixedPrecision
    from miniai.learner import ProgressCB
    seen = []
    class FakeLearner:
        def __init__(self, model, dls, loss_func, lr, cbs, opt_func): seen.append(cbs)
        def fit(self, epochs): pass
    monkeypatch.setattr(mi, 'Learner', FakeLearner)
    monkeypatch.setattr(mi, 'classifier_accuracy', lambda model, dl: 0.)
    x = torch.zeros(8, 3, 16, 16, dtype=torch.uint8); y = torch.arange(8) % 2
    s = mi.ImageSet(x, y, x, y, ['a', 'b'])
    for progress in (False, True): train_image_classifier(s, epochs=1, bs=4, nfs=(4, 8), device='cpu', progress=progress)
    kinds = [{type(c) for c in cbs} for cbs in seen]
    assert not any(MixedPrecision in k for k in kinds)
    assert ProgressCB not in kinds[0] and ProgressCB in kinds[1]
