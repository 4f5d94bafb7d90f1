"Audio (miniai.audio, miniai.models.simple_diffusion, miniai.audio_diffusion): spectrograms, Griffin-Lim, loaders, the pipeline."
import os
from pathlib import Path
import numpy as np
import pytest
import torch
import miniai.data as md
from miniai.core import batch_seed
from miniai.data import CorruptDataError, MissingDataError
from miniai.audio import (AudioClips, MelSpec, fix_length, find_fsdd, fsdd_dls, load_fsdd, load_hf_audio, load_wav_folder,
                          log_spectral_distance, match_rate, mel_centers, peak_frequency, read_wav, sine,
                          spectral_convergence, spectrogram_images, to_uint8, from_uint8, write_wav, fsdd_label, FSDD_FILE,
                          db_to_image, image_to_db, show_audio)

MEL = MelSpec()
needs_fsdd = pytest.mark.skipif(not (os.environ.get('MINIAI_DATA') and
                                     (Path(os.environ['MINIAI_DATA'])/'fsdd'/FSDD_FILE).exists()),
                                reason='needs $MINIAI_DATA/fsdd (the FSDD archive)')


@pytest.fixture(autouse=True)
def one_thread():
    "Small FFTs run faster on one thread, and the tests share a 2-core machine."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- the spectrogram ---------------------------------------------------------------------------------------

def test_spectrogram_shape_and_range():
    torch.manual_seed(0)
    x = MEL.spectrogram(torch.randn(3, MEL.n_samples).clamp(-1, 1))
    assert x.shape == (3, 1, 64, 64) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.01
    assert (MEL.spectrogram(torch.zeros(MEL.n_samples)) == -1).all()          # silence is the floor
    assert MEL.shape == (1, 64, 64) and MEL.n_samples == 63*128


def test_db_scale_of_a_sine():
    "A full-scale sine at a band centre reads about 0 dB (pixel 1); 10x quieter is exactly 20 dB (0.5) lower."
    c = mel_centers(MEL)
    band = int((c - 1000).abs().argmin())
    x = MEL.spectrogram(torch.stack([sine(c[band].item(), MEL.n_samples, 8000, a) for a in (1., .1)]))
    mid = x[:, 0, :, 8:-8].mean(-1)
    assert mid.argmax(1).tolist() == [band, band]
    assert abs(mid[0].max().item() - 1) < 0.03
    assert abs(mid[0].max().item() - mid[1].max().item() - 0.5) < 0.005


def _htk_band_centres(spec):
    "Centre frequencies (Hz) of the mel bands by hand: HTK mel scale, n_mels + 2 equally spaced edges from f_min to sr/2."
    hz2mel, mel2hz = lambda f: 2595*np.log10(1 + f/700), lambda m: 700*(10**(m/2595) - 1)
    return mel2hz(np.linspace(hz2mel(spec.f_min), hz2mel(spec.f_max or spec.sample_rate/2), spec.n_mels + 2))[1:-1]


def test_mel_centres_by_hand():
    "`mel_centers` is the STFT bin nearest each hand-computed band centre (within half a bin)."
    want, bin_hz = _htk_band_centres(MEL), MEL.sample_rate/MEL.n_fft
    assert np.abs(mel_centers(MEL).numpy() - want).max() <= bin_hz/2 + 0.1


@pytest.mark.parametrize('band', [20, 35, 50, 60])
def test_sine_lights_the_predicted_mel_row_in_every_frame(band):
    "A sine on the STFT bin nearest a band's hand-computed centre is brightest in that row (frequency on the rows) in every frame."
    bin_hz = MEL.sample_rate/MEL.n_fft
    f = round(_htk_band_centres(MEL)[band]/bin_hz)*bin_hz
    x = MEL.spectrogram(sine(f, MEL.n_samples, MEL.sample_rate, .5))[0, 0]
    assert x.shape == (MEL.n_mels, MEL.n_frames)
    assert x[:, 2:-2].argmax(0).tolist() == [band]*(MEL.n_frames - 4)


def test_image_db_mapping_round_trip():
    "dB range <-> [-1, 1]: ends map to ends, each way inverts the other, values outside are clipped."
    d = torch.linspace(-80, 0, 161)
    assert db_to_image(torch.tensor([-80., -40., 0.]), MEL).tolist() == [-1., 0., 1.]
    assert image_to_db(torch.tensor([-1., 0., 1.]), MEL).tolist() == [-80., -40., 0.]
    assert torch.allclose(image_to_db(db_to_image(d, MEL), MEL), d, atol=1e-4)
    assert db_to_image(torch.tensor([-200., 30.]), MEL).tolist() == [-1., 1.]
    assert image_to_db(torch.tensor([-1.5, 1.5]), MEL).tolist() == [-80., 0.]   # raw sampler output is clipped to the range


@pytest.mark.parametrize('freq', [440., 2500.])
def test_round_trip_keeps_the_level(freq):
    "waveform(spectrogram(x)) has about the RMS of x (the dB mapping and reference power are undone) and the same image."
    torch.manual_seed(0)
    x = sine(freq, MEL.n_samples, MEL.sample_rate, .5)
    s = MEL.spectrogram(x)
    y = MEL.waveform(s)[0]
    rms = lambda w: w[1000:-1000].pow(2).mean().sqrt().item()
    assert 0.85 < rms(y)/rms(x) < 1.15
    loud = s > 0                                                                  # above -40 dB: the tone itself
    assert (MEL.spectrogram(y) - s)[loud].abs().mean() < 0.1                      # heard again, ~the same picture


def test_griffin_lim_iterations_default_to_the_spec():
    "`MelSpec(n_iter=k).waveform(s)` runs k iterations (the same as `waveform(s, n_iter=k)`)."
    from dataclasses import replace
    s = MEL.spectrogram(sine(700., MEL.n_samples, MEL.sample_rate, .5))
    torch.manual_seed(0); a = replace(MEL, n_iter=2).waveform(s)
    torch.manual_seed(0); b = MEL.waveform(s, n_iter=2)
    torch.manual_seed(0); c = MEL.waveform(s)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_spectrogram_input_errors():
    with pytest.raises(ValueError, match=r'\(B, 8064\)'): MEL.spectrogram(torch.zeros(2, 100))
    with pytest.raises(TypeError, match='floats'): MEL.spectrogram(torch.zeros(2, MEL.n_samples, dtype=torch.int16))
    with pytest.raises(ValueError, match=r'\(B, 1, 64, 64\)'): MEL.waveform(torch.zeros(2, 1, 32, 64))
    with pytest.raises(ValueError, match='db_range'): MelSpec(db_range=(0., -80.))
    with pytest.raises(ValueError, match='hold no STFT bin'): MelSpec(n_mels=128).spectrogram(torch.zeros(1, MEL.n_samples))


def test_pseudo_inverse_matches_torchaudio_inverse_mel():
    "Our inverse mel (a cached pseudo-inverse) equals torchaudio's InverseMelScale(driver='gelsd')."
    from torchaudio.transforms import InverseMelScale
    from miniai.audio import mel_power, _mel_basis
    torch.manual_seed(0)
    P = mel_power(MEL, torch.randn(1, 1024)*0.3)               # 9 frames: the gelsd solver is slow
    ref = InverseMelScale(MEL.n_fft//2 + 1, MEL.n_mels, MEL.sample_rate, driver='gelsd')(P)
    ours = torch.relu(_mel_basis(MEL, torch.device('cpu'))[2] @ P)
    torch.testing.assert_close(ours, ref, atol=1e-4*ref.abs().max().item(), rtol=1e-3)


@pytest.mark.parametrize('freq', [440., 1500.])
def test_sine_keeps_its_frequency_through_the_round_trip(freq):
    torch.manual_seed(0)
    y = MEL.waveform(MEL.spectrogram(sine(freq, MEL.n_samples, 8000, 0.5)))
    assert y.shape == (1, MEL.n_samples)
    assert abs(peak_frequency(y[0, 1000:-1000], 8000) - freq) < 0.03*freq


def test_round_trip_metrics_known_values():
    torch.manual_seed(0)
    x = torch.randn(2, MEL.n_samples)*0.3
    torch.testing.assert_close(spectral_convergence(x, x), torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(spectral_convergence(x, x/2), torch.full((2,), .5), atol=1e-5, rtol=0)
    torch.testing.assert_close(log_spectral_distance(x, x/2), torch.full((2,), 20*np.log10(2)), atol=1e-3, rtol=0)
    # Griffin-Lim beats random phases (1 iteration) on a real-looking signal
    speechy = sum(sine(f, MEL.n_samples, 8000, 1/(k+1)) for k, f in enumerate((220, 440, 660, 880)))[None]
    speechy = speechy*torch.hann_window(MEL.n_samples)/2
    s = MEL.spectrogram(speechy)
    assert spectral_convergence(speechy, MEL.waveform(s, n_iter=32)) < spectral_convergence(speechy, MEL.waveform(s, n_iter=1))


def test_griffin_lim_converges_with_momentum():
    "Fast Griffin-Lim (momentum 0.99): a harmonic clip's round trip reaches spectral convergence below 0.36 in the default 32 iterations."
    # measured: 0.30-0.33 over seeds 0-3 with momentum 0.99; plain Griffin-Lim (momentum 0) gives 0.39-0.43
    x = sum(sine(f, MEL.n_samples, 8000, 1/(k+1)) for k, f in enumerate((220, 440, 660, 880, 1320, 1760)))[None]
    x = x*torch.hann_window(MEL.n_samples)/2
    s = MEL.spectrogram(x)
    sc = []
    for seed in range(4):
        torch.manual_seed(seed); sc.append(spectral_convergence(x, MEL.waveform(s)).item())
    assert MEL.n_iter == 32 and np.mean(sc) < 0.36, sc


def test_uint8_storage_round_trip():
    x = torch.linspace(-1, 1, 1001)
    assert torch.equal(to_uint8(torch.tensor([-1., 1.])), torch.tensor([0, 255], dtype=torch.uint8))
    assert (from_uint8(to_uint8(x)) - x).abs().max() <= 1/255 + 1e-6


# --- fixed length ------------------------------------------------------------------------------------------

def test_fix_length_pads_trims_and_normalises(capsys):
    out = fix_length([torch.tensor([.5, .25]), torch.tensor([1., 2, 3, 4, 5])], 3)
    torch.testing.assert_close(out, torch.tensor([[1., .5, 0], [1/3, 2/3, 1]]))
    assert '1 of 2 clips' in capsys.readouterr().out          # trimming is reported
    torch.testing.assert_close(fix_length([torch.tensor([.5])], 2, peak=None), torch.tensor([[.5, 0.]]))
    assert torch.equal(fix_length([torch.zeros(4)], 2), torch.zeros(1, 2))   # silence stays silence
    with pytest.raises(ValueError, match='1-D'): fix_length([torch.zeros(2, 2)], 3)
    with pytest.raises(ValueError, match='n_samples'): fix_length([torch.zeros(2)], 0)


# --- loaders -----------------------------------------------------------------------------------------------

def test_missing_fsdd_names_every_place_tried(tmp_path, monkeypatch):
    monkeypatch.setenv('MINIAI_DATA', str(tmp_path/'data'))
    with pytest.raises(MissingDataError) as e: find_fsdd(tmp_path/'mine')
    msg = str(e.value)
    for p in (tmp_path/'mine'/FSDD_FILE, tmp_path/'mine'/'fsdd'/FSDD_FILE): assert str(p) in msg
    assert str(tmp_path/'data') not in msg and 'only `data_dir` is searched' in msg   # a given data_dir is the only place
    with pytest.raises(MissingDataError, match=str(tmp_path/'data'/'fsdd'/FSDD_FILE)): find_fsdd()
    monkeypatch.delenv('MINIAI_DATA')
    with pytest.raises(MissingDataError, match='MINIAI_DATA is unset'): find_fsdd()


def test_shipped_fsdd_sample_and_the_quick_fallback(tmp_path, monkeypatch, capsys):
    "300 clips, balanced over digits in both splits; loaders fall back to them in quick mode only, never for a `data_dir`."
    monkeypatch.delenv('MINIAI_DATA', raising=False)
    monkeypatch.setattr(md, '_sample_noted', set())
    tr, te = load_fsdd('train', sample=True), load_fsdd('test', sample=True)
    assert (len(tr), len(te)) == (180, 120) and tr.labels.bincount().tolist() == [18]*10 and te.labels.bincount().tolist() == [12]*10
    assert all(n.split('_')[2] in ('5.wav', '6.wav', '7.wav') for n in tr.names) and all(n.endswith(('_0.wav', '_1.wav')) for n in te.names)
    monkeypatch.setenv('MINIAI_QUICK', '1')
    with pytest.raises(MissingDataError): find_fsdd()                                # the finder itself never substitutes
    dls = fsdd_dls(bs=16, limit=(50, 20), device='cpu', seed=0)
    assert 'Note: full FSDD not found' in capsys.readouterr().out
    assert (dls.train.dataset_len, dls.valid.dataset_len) == (50, 20)
    with pytest.raises(MissingDataError): load_fsdd('test', tmp_path)               # never instead of the copy asked for
    with pytest.raises(MissingDataError): load_fsdd('test', allow_sample=False)
    with pytest.raises(MissingDataError): fsdd_dls(limit=(50, 20), device='cpu', allow_sample=False)
    monkeypatch.setenv('MINIAI_QUICK', '0')
    with pytest.raises(MissingDataError, match='sample=True'): load_fsdd('test')    # full size: no substitution


def test_damaged_fsdd_is_reported(tmp_path):
    (tmp_path/FSDD_FILE).write_bytes(b'not the archive')
    with pytest.raises(CorruptDataError, match='SHA-256'): find_fsdd(tmp_path)


def test_wav_folder_resamples_or_refuses(tmp_path):
    write_wav(tmp_path/'1_a_0.wav', sine(440, 8000, 8000, .5), 8000, peak=None)
    write_wav(tmp_path/'x'/'2_b_0.wav', sine(440, 16000, 16000, .5), 16000, peak=None)      # 1 s at 16 kHz
    clips = load_wav_folder(tmp_path, sample_rate=8000, label_fn=fsdd_label)
    assert clips.sample_rate == 8000 and clips.labels.tolist() == [1, 2]
    assert [len(w) for w in clips.waves] == [8000, 8000]                                       # still 1 s
    assert abs(peak_frequency(clips.waves[1], 8000) - 440) < 5                                 # same pitch
    with pytest.raises(ValueError, match='sample rate 16000 Hz, expected 8000 Hz'):
        load_wav_folder(tmp_path, sample_rate=8000, resample=False)
    assert load_wav_folder(tmp_path).sample_rate == 8000                                       # default: first file's rate


def test_wav_folder_finds_files_whatever_the_case_of_their_extension(tmp_path):
    write_wav(tmp_path/'A.WAV', sine(440, 800, 8000, .5), 8000, peak=None)
    write_wav(tmp_path/'b.wav', sine(440, 800, 8000, .5), 8000, peak=None)
    (tmp_path/'notes.txt').write_text('not audio')
    assert load_wav_folder(tmp_path).names == ['A.WAV', 'b.wav']


def test_wav_folder_errors(tmp_path):
    with pytest.raises(MissingDataError, match='does not exist'): load_wav_folder(tmp_path/'nope')
    with pytest.raises(MissingDataError, match="no files matching '\\*.wav'"): load_wav_folder(tmp_path)
    (tmp_path/'bad.wav').write_bytes(b'RIFF garbage')
    with pytest.raises(CorruptDataError, match='bad.wav'): load_wav_folder(tmp_path)


def test_wav_write_read_round_trip(tmp_path):
    w = sine(300, 800, 8000, .5)
    p = write_wav(tmp_path/'a.wav', w, 8000, peak=None)
    back, rate = read_wav(p)
    assert rate == 8000
    torch.testing.assert_close(back, w, atol=1/32768, rtol=0)
    with pytest.raises(ValueError, match='non-finite'): write_wav(tmp_path/'b.wav', torch.tensor([float('nan')]), 8000)


def test_missing_optional_dependencies_say_how_to_install(tmp_path, monkeypatch):
    "Without soundfile, torchaudio or IPython (a plain `pip install miniai`), the error names the package and the install."
    import importlib, sys
    monkeypatch.setitem(sys.modules, 'soundfile', None)            # an import of it now fails as if it were not installed
    for call in (lambda: read_wav(tmp_path/'a.wav'), lambda: write_wav(tmp_path/'a.wav', torch.zeros(10), 8000)):
        with pytest.raises(ImportError, match=r"soundfile: pip install 'miniai\[audio\]'"): call()
    assert not list(tmp_path.iterdir())                             # nothing half-written
    monkeypatch.setitem(sys.modules, 'IPython.display', None)
    with pytest.raises(ImportError, match='needs IPython: pip install ipython'): show_audio([torch.zeros(10)], 8000)
    monkeypatch.delitem(sys.modules, 'miniai.audio')                # a fresh import of the module, torchaudio gone
    for name in [m for m in sys.modules if m == 'torchaudio' or m.startswith('torchaudio.')]: monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, 'torchaudio', None)
    with pytest.raises(ModuleNotFoundError, match=r"miniai.audio needs torchaudio and soundfile .*pip install 'miniai\[audio\]'") as e:
        importlib.import_module('miniai.audio')
    assert e.value.name.startswith('torchaudio')                     # the missing module, as Python names it


def test_match_rate():
    w = torch.randn(100)
    assert match_rate(w, 8000, 8000) is w
    assert len(match_rate(w, 8000, 16000)) == 200
    with pytest.raises(ValueError, match='resample=True'): match_rate(w, 8000, 16000, resample=False)


def test_hf_audio_dataset(tmp_path):
    datasets = pytest.importorskip('datasets')
    write_wav(tmp_path/'a.wav', sine(440, 4000, 8000, .5), 8000, peak=None)
    write_wav(tmp_path/'b.wav', sine(440, 8000, 16000, .5), 16000, peak=None)
    ds = datasets.Dataset.from_dict({'audio': [str(tmp_path/'a.wav'), str(tmp_path/'b.wav')], 'label': [0, 1]})
    ds = ds.cast_column('audio', datasets.Audio()).cast_column('label', datasets.ClassLabel(names=['x', 'y']))
    clips = load_hf_audio(ds, sample_rate=8000)
    assert [len(w) for w in clips.waves] == [4000, 4000] and clips.labels.tolist() == [0, 1] and clips.classes == ['x', 'y']
    with pytest.raises(ValueError, match='row 1: sample rate 16000'): load_hf_audio(ds, 8000, resample=False)
    decoded = datasets.Dataset.from_dict({'audio': [{'array': np.zeros(10, np.float32), 'sampling_rate': 8000}]})
    assert len(load_hf_audio(decoded, 8000, label_column=None).waves[0]) == 10
    with pytest.raises(KeyError, match='no column'): load_hf_audio(ds, 8000, audio_column='sound')
    both = datasets.DatasetDict(train=ds, test=ds.select([0]))   # what `load_dataset(name)` gives without a split
    assert len(load_hf_audio(both, 8000).waves) == 2 and len(load_hf_audio(both, 8000, split='test').waves) == 1
    with pytest.raises(ValueError, match=r"no split 'valid' \(splits: \['train', 'test'\]\)"): load_hf_audio(both, 8000, split='valid')


def test_hf_audio_string_labels_become_classes(tmp_path):
    "Labels stored as strings (a common layout) map to their sorted names; other label types are refused clearly."
    datasets = pytest.importorskip('datasets')
    audio = [{'array': np.zeros(10, np.float32), 'sampling_rate': 8000}]*3
    clips = load_hf_audio(datasets.Dataset.from_dict({'audio': audio, 'label': ['wren', 'owl', 'wren']}), 8000)
    assert clips.classes == ['owl', 'wren'] and clips.labels.tolist() == [1, 0, 1]
    with pytest.raises(TypeError, match=r"column 'label' must hold integer or string class labels, got \['float'\]"):
        load_hf_audio(datasets.Dataset.from_dict({'audio': audio, 'label': [0.5, 1.5, 2.5]}), 8000)


def test_subset_keeps_labels_and_names_aligned():
    clips = AudioClips([torch.full((3,), float(i)) for i in range(5)], 8000, torch.tensor([9, 8, 7, 6, 5]), classes=list('abcdefghij'))
    sub = clips.subset(torch.tensor([4, 1]))
    assert sub.labels.tolist() == [5, 8] and sub.names == ['clip_4', 'clip_1'] and [w[0].item() for w in sub.waves] == [4., 1.]
    assert sub.sample_rate == 8000 and sub.classes == clips.classes
    assert repr(sub) == 'AudioClips(2 clips, 8000 Hz, 0.0 s, labels=yes)'
    assert repr(AudioClips([torch.zeros(8000), torch.zeros(4000)], 8000)) == 'AudioClips(2 clips, 8000 Hz, 1.5 s, labels=no)'


def test_subset_takes_boolean_masks():
    "A boolean mask (tensor, array or list) keeps the clips where it is True, not clips 0 and 1; its length must match."
    clips = AudioClips([torch.full((3,), float(i)) for i in range(4)], 8000, torch.tensor([0, 1, 2, 3]))
    for mask in (torch.tensor([False, True, False, True]), np.array([False, True, False, True]), [False, True, False, True]):
        assert clips.subset(mask).labels.tolist() == [1, 3]
    assert len(clips.subset(torch.zeros(4, dtype=torch.bool))) == 0 and clips.subset([]).labels.tolist() == []
    with pytest.raises(ValueError, match=r'one entry per clip \(4\), got 2'): clips.subset([True, False])


def test_spectrogram_images_checks_the_rate():
    clips = AudioClips([torch.zeros(100)], 16000)
    with pytest.raises(ValueError, match='16000 Hz but the spectrogram expects 8000 Hz'): spectrogram_images(clips, MEL)
    x = spectrogram_images(AudioClips([torch.zeros(100), sine(500, 9000, 8000)], 8000), MEL, device='cpu')
    assert x.dtype == torch.uint8 and x.shape == (2, 1, 64, 64) and (x[0] == 0).all()


@needs_fsdd
def test_fsdd_official_split_and_resampling():
    test = load_fsdd('test')
    assert len(test) == 300 and test.labels.bincount().tolist() == [30]*10 and test.sample_rate == 8000
    assert all(n.split('_')[2] in ('0.wav', '1.wav', '2.wav', '3.wav', '4.wav') for n in test.names)   # takes 0-4
    assert test.labels.tolist() == [fsdd_label(n) for n in test.names]     # each label is the digit its file name says
    up = load_fsdd('test', sample_rate=16000)
    assert up.sample_rate == 16000 and abs(len(up.waves[0]) - 2*len(test.waves[0])) <= 1
    with pytest.raises(ValueError, match='recorded at 8000 Hz'): load_fsdd('test', sample_rate=16000, resample=False)
    with pytest.raises(ValueError, match="'train', 'test' or 'all'"): load_fsdd('valid')


# --- the model and the pipeline ----------------------------------------------------------------------------

def test_simple_diffusion_shapes_and_token_grid():
    from miniai.models.simple_diffusion import SimpleDiffusion, EmbTransformerBlk
    m = SimpleDiffusion(nfs=(4, 8, 16), n_mids=1, mid_attn_chans=8, n_classes=10).eval()
    assert m.grid == (16, 16) and m.mid_block.pos.scale.shape == (256, 16)
    with torch.no_grad():
        assert m(torch.randn(2, 1, 64, 64), torch.randn(2), torch.tensor([3, 10])).shape == (2, 1, 64, 64)
        with pytest.raises(ValueError, match='built for a \\(16, 16\\) grid'): m(torch.randn(2, 1, 32, 32), torch.randn(2))
        blk, perm = EmbTransformerBlk(8, 16, 8).eval(), torch.randperm(5)
        x, emb = torch.randn(2, 5, 16), torch.randn(2, 8)
        torch.testing.assert_close(blk(x[:, perm], emb), blk(x, emb)[:, perm], atol=1e-5, rtol=1e-5)


class ZeroNet(torch.nn.Module):
    "A Karras network whose output is 0: samples are scaled noise (about sigma_data*noise), so they depend on seed and sigma_data."
    def __init__(self, n_classes=None):
        super().__init__()
        self.p, self.n_classes = torch.nn.Parameter(torch.zeros(())), n_classes
    def forward(self, x, t, c=None): return x*self.p


def test_generate_spectrograms_clamps_and_seeds_each_batch():
    from miniai.audio_diffusion import generate_spectrograms
    from miniai.diffusion.ksamplers import sample
    m = ZeroNet()
    x = generate_spectrograms(m, 3, sigma_data=5., shape=(1, 8, 8), steps=3, bs=2, seed=4)
    raw = torch.cat([sample('dpmpp_2m', m, (b, 1, 8, 8), steps=3, seed=batch_seed(4, i), sigma_data=5., device='cpu').x for i, b in enumerate((2, 1))])
    assert raw.abs().max() > 2                                        # unclamped samples leave [-1, 1] ...
    torch.testing.assert_close(x, raw.clamp(-1, 1))                  # ... the images do not


def test_heard_is_the_griffin_lim_round_trip():
    from miniai.audio_diffusion import heard
    s = MEL.spectrogram(torch.stack([sine(f, MEL.n_samples, MEL.sample_rate, .5) for f in (500., 1200.)]))
    torch.manual_seed(0); h = heard(MEL, s, bs=1, device='cpu')
    torch.manual_seed(0); want = torch.cat([MEL.spectrogram(MEL.waveform(s[i:i+1])) for i in range(2)])
    assert torch.equal(h, want) and not torch.equal(h, s)


def test_digit_accuracy_by_hand():
    "A stub classifier that predicts the digit written in pixel (0, 0): overall and per-digit accuracies counted by hand."
    from miniai.audio_diffusion import digit_accuracy
    class Reads(torch.nn.Module):
        def __init__(self): super().__init__(); self.p = torch.nn.Parameter(torch.zeros(()))
        def forward(self, x): return torch.nn.functional.one_hot(x[:, 0, 0, 0].long(), 10).float() + self.p
    preds = torch.tensor([1, 1, 2, 3, 3, 3])
    digits = torch.tensor([1, 2, 2, 3, 4, 4])
    images = preds.float().view(-1, 1, 1, 1).expand(-1, 1, 4, 4)
    acc, per = digit_accuracy(Reads(), images, digits, bs=4)
    assert acc == pytest.approx(3/6)
    want = [float('nan'), 1., .5, 1., 0.] + [float('nan')]*5      # digit 2: one of two right; digit 4: none; absent: NaN
    torch.testing.assert_close(per, torch.tensor(want), equal_nan=True)


def test_digit_features_are_the_classifier_body():
    from miniai.audio_diffusion import digit_classifier, digit_features
    torch.manual_seed(0)
    m = digit_classifier((4, 8)).eval()
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        f = digit_features(m)(x)
        assert f.shape == (3, 8)
        torch.testing.assert_close(m[-3:](f), m(x))                   # the head on the features gives the logits
    fresh = digit_classifier((4, 8))                                   # in training mode, as made
    digit_features(fresh)
    assert not any(mod.training for mod in fresh.modules())            # the head too: no classifier left half in training mode


def test_evaluate_generation_scores_what_was_asked(monkeypatch):
    "The floor uses k real training clips per digit with their own labels; conditional samples are scored against the digits asked for."
    import miniai.audio_diffusion as ad
    asked, scored = [], {}
    def fake_gen(model, n=None, digits=None, scale=1., seed=0, **kw):
        asked.append((model, None if digits is None else torch.as_tensor(digits).clone(), scale))
        if digits is None: return torch.full((n, 1, 8, 8), -1.)
        return torch.as_tensor(digits).float().view(-1, 1, 1, 1).expand(-1, 1, 8, 8).clone()   # an image shows its digit
    def fake_scores(ie, clf, spec, images, digits=None):
        scored[len(scored)] = (images, digits); return dict(n=len(images))
    monkeypatch.setattr(ad, 'generate_spectrograms', fake_gen)
    monkeypatch.setattr(ad, 'ImageEval', lambda *a, **k: None)
    monkeypatch.setattr(ad, 'audio_scores', fake_scores)
    y = torch.arange(40) % 10
    x = y.float().view(-1, 1, 1, 1).expand(-1, 1, 8, 8).clone()
    dls = type('D', (), dict(train=[(x, y)], valid=[(x[:10], y[:10])]))()
    cfg = {**ad.AUDIO_QUICK_CONFIG, 'n_per_digit': 2, 'n_uncond': 3, 'guidance': (1., 3.)}
    res = ad.evaluate_generation(ad.digit_classifier((4, 8)), 'uncond', 'cond', dls, .5, cfg)
    assert list(res) == ['real train clips (floor)', 'unconditional', 'conditional, w=1', 'conditional, w=3']
    (fi, fd), (ui, ud) = scored[0], scored[1]
    assert fd.bincount().tolist() == [2]*10 and torch.equal(fi[:, 0, 0, 0].long(), fd)
    assert ud is None and len(ui) == 3
    for k, w in ((2, 1.), (3, 3.)):
        img, d = scored[k]
        assert torch.equal(img[:, 0, 0, 0].long(), d) and d.bincount().tolist() == [2]*10
    assert [(m, s) for m, _, s in asked] == [('uncond', 1.), ('cond', 1.), ('cond', 3.)]


def test_evaluate_generation_draws_the_floor_clips_with_its_seed(monkeypatch):
    "The floor's k clips per digit are a seeded random draw among that digit's training clips, not the first k."
    import miniai.audio_diffusion as ad
    picked = []
    monkeypatch.setattr(ad, 'ImageEval', lambda *a, **k: None)
    monkeypatch.setattr(ad, 'audio_scores', lambda ie, clf, spec, images, digits=None: picked.append(images[:, 0, 0, 0].long()) or {})
    y = torch.arange(60) % 10                                   # six clips per digit
    x = torch.arange(60).float().view(-1, 1, 1, 1).expand(-1, 1, 8, 8).clone()   # each clip shows its index
    dls = type('D', (), dict(train=[(x, y)], valid=[(x[:10], y[:10])]))()
    cfg = {**ad.AUDIO_QUICK_CONFIG, 'n_per_digit': 2}
    for seed in (0, 1): ad.evaluate_generation(ad.digit_classifier((4, 8)), None, None, dls, .5, cfg, seed=seed)
    for seed, got in zip((0, 1), picked):
        g = torch.Generator().manual_seed(seed)
        want = torch.cat([torch.arange(d, 60, 10)[torch.randperm(6, generator=g)[:2]] for d in range(10)])
        assert torch.equal(got, want)
    assert not torch.equal(picked[0], picked[1])


def test_audio_scores_fid_heard_scores_the_heard_spectrograms(monkeypatch):
    "`fid` scores the images as generated, `fid_heard` their Griffin-Lim round trip."
    import miniai.audio_diffusion as ad
    images = torch.zeros(4, 1, 8, 8)
    monkeypatch.setattr(ad, 'heard', lambda spec, x: x - 1)
    class Eval:
        def fid(self, x): return x.mean().item()
    r = ad.audio_scores(Eval(), None, MEL, images)
    assert r == dict(n=4, fid=0., fid_heard=-1.)


@needs_fsdd
def test_pipeline_end_to_end_quick(tmp_path):
    "Tiny models, a few steps: conditional training, guided sampling, Griffin-Lim, WAV files of the right length, scores."
    from miniai.audio_diffusion import (AUDIO_QUICK_CONFIG, all_items, evaluate_generation, generate_spectrograms,
                                        simple_diffusion, train_audio_diffusion, train_digit_classifier)
    cfg = {**AUDIO_QUICK_CONFIG, 'n_per_digit': 1, 'n_uncond': 4, 'guidance': (2.,), 'steps': 2}
    dls = fsdd_dls(bs=32, limit=(64, 20), device='cpu', seed=0)
    x, _ = all_items(dls.train)
    sigma_data = x.std().item()
    model, learn = train_audio_diffusion(dls, sigma_data, 10, cfg, progress=False)
    losses = [h['loss'] for h in learn.metrics.history]
    assert all(np.isfinite(losses))
    specs = generate_spectrograms(model, digits=[3, 7], scale=2., sigma_data=sigma_data, steps=2, bs=1)
    assert specs.shape == (2, 1, 64, 64) and specs.dtype == torch.float32
    # batch i is seeded with batch_seed(seed, i): the second clip is a guided sampling of digit 7 alone with batch_seed(0, 1)
    from miniai.diffusion.guidance import GuidedModel
    from miniai.diffusion.ksamplers import sample
    alone = sample('dpmpp_2m', GuidedModel(model, torch.tensor([7]), 2.), (1, 1, 64, 64), steps=2, seed=batch_seed(0, 1),
                   sigma_data=sigma_data, device='cpu').x.clamp(-1, 1)
    torch.testing.assert_close(specs[1:], alone)
    assert not torch.equal(specs[0], specs[1])
    waves = MEL.waveform(specs)
    assert waves.shape == (2, MEL.n_samples) and torch.isfinite(waves).all()
    back, rate = read_wav(write_wav(tmp_path/'seven.wav', waves[1], MEL.sample_rate))
    assert (rate, len(back)) == (8000, MEL.n_samples)
    with pytest.raises(ValueError, match='unconditional'):
        generate_spectrograms(simple_diffusion(cfg, n_classes=None), digits=[1])
    clf, acc = train_digit_classifier(dls, epochs=1, nfs=(4, 8), progress=False, device='cpu')
    assert 0 <= acc <= 1
    res = evaluate_generation(clf, None, model, dls, sigma_data, cfg)
    assert set(res) == {'real train clips (floor)', 'conditional, w=2'}
    r = res['conditional, w=2']
    assert r['n'] == 10 and np.isfinite(r['fid']) and np.isfinite(r['fid_heard']) and len(r['per_digit_heard']) == 10


def test_fsdd_loaders_check_limit_and_rate_before_reading(tmp_path, monkeypatch):
    "Bad `limit` / `sample_rate` values are refused with a message naming them, before the archive is looked for."
    monkeypatch.delenv('MINIAI_DATA', raising=False)
    for limit in ((0, 0), (50,), 'x', (-1, None)):
        with pytest.raises(ValueError, match='`limit` must'): fsdd_dls(limit=limit, data_dir=tmp_path)
    for rate, err in ((0, ValueError), (-8000, ValueError), (8000.5, TypeError), (None, TypeError)):
        with pytest.raises(err, match='`sample_rate` must be'): load_fsdd('test', tmp_path, sample_rate=rate)


def test_write_wav_takes_a_mono_column_and_refuses_a_batch(tmp_path):
    "(L, 1) is how soundfile returns mono audio: it is one clip. (2, L) is a batch, which was written as one long clip."
    w = torch.sin(torch.arange(800.)/5)*0.5
    write_wav(tmp_path/'a.wav', w[:, None], 8000)
    back, rate = read_wav(tmp_path/'a.wav')
    assert rate == 8000 and back.shape == (800,)
    with pytest.raises(ValueError, match='must be one waveform'): write_wav(tmp_path/'b.wav', torch.stack([w, w]), 8000)


def test_show_audio_displays(monkeypatch):
    "show_audio displays its table in the notebook, not only returns it."
    import IPython.display
    shown = []
    monkeypatch.setattr(IPython.display, 'display', lambda *a, **k: shown.extend(a))
    html = show_audio(torch.randn(2, 800) * 0.1, 8000)
    assert shown == [html]


@needs_fsdd
def test_train_digit_classifier_default_device(monkeypatch):
    "train_digit_classifier with `device=None` trains on `default_device()`."
    import miniai.audio_diffusion as ad
    dls = fsdd_dls(bs=32, limit=(64, 20), device='cpu', seed=0)
    monkeypatch.setattr(ad, 'default_device', lambda: torch.device('cpu'))
    clf, acc = ad.train_digit_classifier(dls, epochs=1, nfs=(4, 8), progress=False, device=None)
    assert 0 <= acc <= 1 and next(clf.parameters()).device.type == 'cpu'


def test_scores_table_formats_and_blanks():
    "scores_table formats the scores a row has and leaves the missing ones empty."
    from miniai.audio_diffusion import scores_table
    t = scores_table({'real': dict(n=10, fid=1.234, fid_heard=0.5, accuracy=0.9, accuracy_heard=0.8), 'gen': dict(n=4, fid=2.)}, 0.95)
    assert '| real | 10 | 1.23 | 0.50 | 90.0% | 80.0% |' in t
    assert '| gen | 4 | 2.00 |  |  |  |' in t and '95.0%' in t


def test_digit_features_smallest_classifier():
    "digit_features takes the smallest classifier: one body layer and the 4-layer head."
    from torch import nn
    from miniai.audio_diffusion import digit_features
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Dropout(), nn.Linear(2, 10), nn.BatchNorm1d(10))
    feats = digit_features(m)
    assert len(feats) == 2 and isinstance(feats[-1], nn.Flatten)


def test_write_wav_accepts_full_scale_peak(tmp_path):
    "write_wav takes `peak=1.` (full scale), which the round trip reads back at 1."
    w = torch.sin(torch.linspace(0, 100, 800)) * 0.3
    back, rate = read_wav(write_wav(tmp_path/'a.wav', w, 8000, peak=1.))
    assert rate == 8000 and len(back) == 800 and abs(float(abs(back).max()) - 1) < 1e-3


def test_to_uint8_saturates_outside_minus_one_one():
    "Values below -1 map to 0 and above 1 to 255 (no wrap-around); -1, 0, 1 map to 0, 128, 255."
    assert to_uint8(torch.tensor([-3., -1.5, -1., 0., 1., 1.5, 3.])).tolist() == [0, 0, 0, 128, 255, 255, 255]


def test_hf_audio_without_a_label_column_loads_unlabelled():
    "A dataset with no column named by the default `label_column` loads as unlabelled clips."
    datasets = pytest.importorskip('datasets')
    ds = datasets.Dataset.from_dict({'audio': [{'array': np.zeros(10, np.float32), 'sampling_rate': 8000}]*2})
    clips = load_hf_audio(ds, 8000)
    assert len(clips.waves) == 2 and clips.labels is None and clips.classes is None


def test_peak_frequency_resolves_short_clips_finely():
    "A short clip is zero-padded to at least 4096 FFT bins, so a tone between coarse bins is found within 2 Hz."
    assert abs(peak_frequency(sine(450, 200, 8000), 8000) - 450) < 2


def test_mel_spectrogram_refuses_non_tensor_waveforms():
    "Waveforms passed as a list are refused with a TypeError that names the type."
    with pytest.raises(TypeError, match='waveforms must be a tensor, got list'): MEL.spectrogram([0.]*MEL.n_samples)


def test_mel_spectrogram_refuses_non_finite_waveforms():
    "A waveform with a NaN sample is refused instead of turning into NaN pixels."
    w = torch.zeros(MEL.n_samples); w[5] = float('nan')
    with pytest.raises(ValueError, match='`waveforms` contains 1 non-finite'): MEL.spectrogram(w)


def test_show_audio_titles_each_player_with_its_clip(monkeypatch):
    "Each cell shows its title above the player of the matching clip, in order."
    import IPython.display
    monkeypatch.setattr(IPython.display, 'display', lambda *a, **k: None)
    waves = [torch.full((800,), 0.05), torch.full((1600,), 0.1)]
    cells = show_audio(waves, 8000, titles=['alpha', 'beta']).data.split('<td')[1:]
    assert len(cells) == 2 and 'alpha<br>' in cells[0] and 'beta<br>' in cells[1]
    assert len(cells[1]) > len(cells[0])          # the longer clip's player (its embedded WAV) is in the second cell


def test_generate_spectrograms_draws_a_single_clip():
    "One clip (n=1, or a single digit) is a valid request; n=0 is refused."
    from miniai.audio_diffusion import generate_spectrograms
    assert generate_spectrograms(ZeroNet(), 1, shape=(1, 8, 8), steps=2).shape == (1, 1, 8, 8)
    assert generate_spectrograms(ZeroNet(10), digits=[4], shape=(1, 8, 8), steps=2).shape == (1, 1, 8, 8)
    with pytest.raises(ValueError, match='got n=0'): generate_spectrograms(ZeroNet(), 0, shape=(1, 8, 8), steps=2)


def test_evaluate_generation_griffin_lim_phases_follow_its_seed(monkeypatch):
    "The scoring (Griffin-Lim's random phases) runs under `seed`, whatever the global torch RNG state was."
    from types import SimpleNamespace as NS
    import miniai.audio_diffusion as ad
    draws = []
    monkeypatch.setattr(ad, 'ImageEval', lambda *a, **k: None)
    monkeypatch.setattr(ad, 'audio_scores', lambda *a, **k: draws.append(torch.rand(3)) or {})
    y = torch.arange(20) % 10
    x = y.float().view(-1, 1, 1, 1).expand(-1, 1, 8, 8).clone()
    dls = NS(train=[(x, y)], valid=[(x[:10], y[:10])])
    cfg = {**ad.AUDIO_QUICK_CONFIG, 'n_per_digit': 1}
    for pre in (1, 2):
        torch.manual_seed(pre)
        ad.evaluate_generation(ad.digit_classifier((4, 8)), None, None, dls, .5, cfg, seed=5)
    assert torch.equal(draws[0], draws[1])
