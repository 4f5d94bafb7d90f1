"What a user meets outside the happy path: 16-bit and rotated images, output paths that cannot be written, odd WAV files."
import json
import numpy as np
import pytest
import torch
from PIL import Image
from miniai.data import CorruptDataError, pil_8bit, _image_to_hwc
from miniai.images import read_image_folder, load_image_set
from miniai.cli import load_labels, load_sample_images, main
from miniai.audio import read_wav
from miniai.diffusion.cosine import cosine_ddim_sample


def _grey16(seed=0, shape=(32, 32)):
    return np.random.default_rng(seed).integers(0, 65536, shape, dtype=np.uint16)

def _save16(a, path):
    Image.fromarray(a).save(path)   # PIL stores a uint16 array as a 16-bit grey PNG (mode I;16)
    with Image.open(path) as im: assert im.mode.startswith('I')
    return path


def test_16_bit_greys_are_scaled_not_clipped(tmp_path):
    a = _grey16()
    want = np.rint(a/257).astype(np.uint8)
    with Image.open(_save16(a, tmp_path/'g.png')) as im:
        assert np.array_equal(np.asarray(pil_8bit(im)), want)
        np.testing.assert_allclose(_image_to_hwc(im), a/65535, atol=0.5/255 + 1e-6)   # what show_image draws
    np.testing.assert_allclose(_image_to_hwc(a), a/65535)
    (tmp_path/'set'/'c').mkdir(parents=True); _save16(a, tmp_path/'set'/'c'/'g.png')
    x, _, _ = read_image_folder(tmp_path/'set', progress=False)
    assert x.shape == (1, 3, 32, 32) and all(np.array_equal(x[0, c].numpy(), want) for c in range(3))


def test_fid_of_a_16_bit_png_folder_equals_the_8_bit_one(tmp_path):
    a8, a16 = tmp_path/'a8', tmp_path/'a16'; a8.mkdir(); a16.mkdir()
    for i in range(3):
        a = _grey16(i)
        Image.fromarray(np.rint(a/257).astype(np.uint8)).save(a8/f'{i:05d}.png'); _save16(a, a16/f'{i:05d}.png')
    assert torch.equal(load_sample_images(a16), load_sample_images(a8))


def test_images_without_a_fixed_range_are_refused_naming_the_file(tmp_path):
    (tmp_path/'c').mkdir()
    Image.fromarray(np.zeros((8, 8), np.float32)).save(tmp_path/'c'/'f.tiff')
    with pytest.raises(CorruptDataError, match=r'f\.tiff.*mode F'): read_image_folder(tmp_path, progress=False)


def test_exif_orientation_is_applied(tmp_path):
    (tmp_path/'c').mkdir()
    im = Image.new('RGB', (40, 20), (200, 10, 10))
    exif = Image.Exif(); exif[0x0112] = 6   # "rotate 90° clockwise to view"
    im.save(tmp_path/'c'/'r.jpg', exif=exif)
    x, _, _ = read_image_folder(tmp_path, progress=False)
    assert x.shape == (1, 3, 40, 20)   # upright: 20 wide, 40 high


def test_a_file_that_is_not_an_npz_is_named_as_such(tmp_path):
    (tmp_path/'x.png').write_bytes(b'')
    with pytest.raises(ValueError, match='is a file but not an .npz archive'): load_image_set(tmp_path/'x.png')


def test_unwritable_outputs_are_refused_before_any_work(tmp_path, monkeypatch, capsys):
    def no_work(*a, **k): raise AssertionError('the work started')
    monkeypatch.setattr('miniai.cli.fid_of_samples', no_work)
    monkeypatch.setattr('miniai.cli.train_diffusion', no_work)
    (tmp_path/'afile').write_text('')
    np.save(tmp_path/'s.npy', np.zeros((2, 1, 32, 32), np.float32))
    for args, msg in ((['fid', str(tmp_path/'s.npy'), '--quick', '--json', str(tmp_path)], 'is a folder'),
                      (['fid', str(tmp_path/'s.npy'), '--quick', '--json', str(tmp_path/'afile'/'r.json')], 'afile is a file'),
                      (['train', '--quick', '--out', str(tmp_path/'afile'/'run')], 'afile is a file'),
                      (['sample', str(tmp_path/'m.safetensors'), '--out', str(tmp_path/'afile'/'s')], 'afile is a file')):
        with pytest.raises(SystemExit) as e: main(args)
        assert e.value.code == 2 and msg in capsys.readouterr().err, args


def test_fid_prints_the_scores_before_writing_the_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr('miniai.cli.fid_of_samples', lambda *a, **k: dict(fid=1.5, kid=0.25, n=2))
    def broken(path): raise PermissionError(f'cannot write {path}')
    monkeypatch.setattr('miniai.cli.atomic_write', broken)
    with pytest.raises(PermissionError): main(['fid', str(tmp_path/'s.npy'), '--quick', '--json', str(tmp_path/'r.json')])
    assert 'FID 1.500' in capsys.readouterr().out


def test_a_labels_file_that_is_not_npy_gets_a_plain_message(tmp_path):
    (tmp_path/'m.json').write_text(json.dumps({'a': 1}))
    with pytest.raises(ValueError, match=r'is not an \.npy file of integer labels') as e: load_labels(tmp_path/'m.json')
    assert 'pickle' not in str(e.value)


def test_the_ddim_progress_bar_counts_the_model_calls(capsys):
    cosine_ddim_sample(lambda x, t: torch.zeros_like(x), (1, 1, 4, 4), steps=10, progress=True)
    assert '9/9' in capsys.readouterr().err


def test_empty_and_non_finite_wavs_are_refused_naming_the_file(tmp_path):
    import soundfile as sf
    sf.write(tmp_path/'empty.wav', np.zeros(0, np.float32), 8000)
    sf.write(tmp_path/'nan.wav', np.array([0., np.nan, 0.5], np.float32), 8000, subtype='FLOAT')
    with pytest.raises(CorruptDataError, match='empty.wav: the audio file holds no samples'): read_wav(tmp_path/'empty.wav')
    with pytest.raises(CorruptDataError, match='nan.wav: the audio holds non-finite'): read_wav(tmp_path/'nan.wav')


def test_mode_i_images_of_unknown_depth_keep_their_0_255_values(tmp_path):
    "Mode I says nothing of the bit depth: integer arrays stored as TIFF (as `datasets` does) hold 0-255 values, kept as they are."
    a = np.random.default_rng(0).integers(0, 256, (8, 8)).astype(np.int32)
    assert np.array_equal(np.asarray(pil_8bit(Image.fromarray(a))), a)
    (tmp_path/'c').mkdir(); Image.fromarray(a).save(tmp_path/'c'/'i.tiff')
    x, _, _ = read_image_folder(tmp_path, progress=False)
    assert np.array_equal(x[0, 0].numpy(), a)
    with pytest.raises(ValueError, match='range is unknown'): pil_8bit(Image.fromarray(a*300))


def test_hf_images_of_mode_i_load_and_bad_ones_name_their_item():
    import datasets
    a = np.random.default_rng(0).integers(0, 256, (2, 8, 8))
    ds = datasets.Dataset.from_dict({'img': [Image.fromarray(x.astype(np.int32)) for x in a]}, features=datasets.Features({'img': datasets.Image()}))
    s = load_image_set(ds, test_frac=0.5, progress=False)
    got = torch.cat([s.train_x, s.test_x])[:, 0].numpy()
    assert sorted(map(bytes, got.astype(np.uint8))) == sorted(map(bytes, a.astype(np.uint8)))
    bad = datasets.Dataset.from_dict({'img': [Image.fromarray(np.zeros((8, 8), np.float32))]*2}, features=datasets.Features({'img': datasets.Image()}))
    with pytest.raises(CorruptDataError, match='item 0: a floating-point'): load_image_set(bad, progress=False)


def test_show_image_honours_a_given_value_range():
    a16 = np.full((4, 4), 65535, np.uint16)
    assert _image_to_hwc(a16, (0, 65535)).max() == 1 and _image_to_hwc(a16).max() == 1
    i8 = Image.fromarray(np.full((4, 4), 255, np.int32))
    assert _image_to_hwc(i8, (0, 255)).max() == 1 and _image_to_hwc(i8).max() == 1
    assert _image_to_hwc(Image.fromarray(np.full((4, 4), 255, np.float32)), (0, 255)).max() == 1


def test_labels_npz_and_upper_case_npz_sets(tmp_path):
    np.savez(tmp_path/'l.npz', y=np.arange(3))
    with pytest.raises(ValueError, match='is an .npz archive'): load_labels(tmp_path/'l.npz')
    np.save(tmp_path/'o.npy', np.array([1, 'a'], dtype=object))
    with pytest.raises(ValueError, match='array of Python objects'): load_labels(tmp_path/'o.npy')
    x = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    with open(tmp_path/'set.NPZ', 'wb') as f: np.savez(f, images=x, labels=np.arange(6) % 2)   # (a path would gain .npz)
    s = load_image_set(tmp_path/'set.NPZ', progress=False)
    assert len(s.train_x) + len(s.test_x) == 6


def test_mode_i_images_with_16_bit_values_and_dark_16_bit_pngs_are_scaled(tmp_path):
    a = np.random.default_rng(1).integers(0, 65536, (8, 8)).astype(np.int32)
    (tmp_path/'c').mkdir(); Image.fromarray(a).save(tmp_path/'c'/'i.tiff')   # a 32-bit TIFF of 16-bit values
    x, _, _ = read_image_folder(tmp_path, progress=False)
    assert np.array_equal(x[0, 0].numpy(), np.rint(a/257).astype(np.uint8))
    dark = Image.fromarray(np.full((4, 4), 200, np.int32)); dark.format = 'PNG'   # older Pillow opens 16-bit PNGs as mode I
    assert np.asarray(pil_8bit(dark)).max() == 1   # 200/257, rounded: a 16-bit file, however dark


def test_big_endian_16_bit_images_show_with_a_given_range():
    im = Image.frombytes('I;16B', (2, 2), np.array([0, 1000, 40000, 65535], '>u2').tobytes())
    np.testing.assert_allclose(_image_to_hwc(im, (0, 65535)).ravel(), np.array([0, 1000, 40000, 65535])/65535, rtol=1e-6)


def test_saved_reference_statistics_know_the_feature_models_layers(tmp_path):
    from torch import nn
    from miniai.fid import ImageEval
    torch.manual_seed(0)
    relu = nn.Sequential(nn.Conv2d(1, 4, 3, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(4*8*8, 6))
    tanh = nn.Sequential(*[nn.Tanh() if isinstance(m, nn.ReLU) else m for m in relu])
    ref = torch.rand(20, 1, 32, 32)*2 - 1
    p = tmp_path/'ref.safetensors'
    ImageEval(relu, ref).ref.save(p)
    ImageEval(relu, p)   # the same model: accepted
    with pytest.raises(ValueError, match='other layers'): ImageEval(tanh, p)
    with pytest.raises(FileNotFoundError, match='no reference statistics file'): ImageEval(relu, tmp_path/'typo.safetensors')


def test_reference_statistics_of_an_older_miniai_warn_that_layers_are_unchecked(tmp_path):
    from torch import nn
    from miniai.fid import ImageEval
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(4*8*8, 6))
    st = ImageEval(m, torch.rand(20, 1, 32, 32)*2 - 1).ref
    st.layers_hash = ''   # as written before the layers were recorded
    st.save(tmp_path/'old.safetensors')
    with pytest.warns(UserWarning, match="does not record its feature model's layers"): ImageEval(m, tmp_path/'old.safetensors')


@pytest.mark.parametrize('flags, progress', [([], True), (['--no-progress'], False)])
def test_fid_command_passes_its_progress_setting(tmp_path, monkeypatch, flags, progress):
    "`miniai fid` asks for progress bars by default and for none with --no-progress."
    seen = {}
    def fake(samples, **kw):
        seen.update(kw)
        return dict(fid=1.5, kid=0.25, n=2)
    monkeypatch.setattr('miniai.cli.fid_of_samples', fake)
    assert main(['fid', str(tmp_path/'s.npy'), '--quick', *flags]) == 0
    assert seen['progress'] is progress
