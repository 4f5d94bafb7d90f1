"""Properties of the VAE, latent, audio and image-set helpers that a hand-made mutation check found unpinned.

Each test checks a known value, an independent computation or an invariant, on tiny synthetic data (no data sets).
"""
import math
from functools import partial
import numpy as np
import pytest
import torch
from PIL import Image

import miniai.audio as maudio
from miniai.accel import EMA
from miniai.audio import (AudioClips, MelSpec, fix_length, load_fsdd, load_hf_audio, log_spectral_distance, mel_centers,
                          peak_frequency, read_wav, sine, spectrogram_images, write_wav)
from miniai.audio_diffusion import AUDIO_QUICK_CONFIG, diffusion_learner, train_audio_diffusion
from miniai.data import DataLoaders, DeviceImageLoader
from miniai.diffusion.guidance import DropLabelCB
from miniai.images import class_balanced_split, read_image_folder, resize_images
from miniai.latents import DeviceTensorLoader, latent_dls
from miniai.vae import VAEOutput

pytestmark = pytest.mark.usefixtures('one_thread')


def _columns(h: int, w: int) -> np.ndarray:
    "uint8 RGB (h, w, 3) whose pixel values are their column index times 10 (plus the row, to tell rows apart)."
    return (np.arange(w)[None, :, None]*10 + np.arange(h)[:, None, None] + np.zeros((1, 1, 3), int)).astype(np.uint8)


# --- images ----------------------------------------------------------------------------------------------

def test_class_split_quota_is_rounded_not_truncated():
    "Each class holds out round(count*test_frac): 17 -> 2 (1.7), 33 -> 3 (3.3), 26 -> 3 (2.6)."
    y = torch.tensor([0]*17 + [1]*33 + [2]*26)
    _, te = class_balanced_split(y, 0.1, seed=0)
    assert torch.bincount(y[te], minlength=3).tolist() == [2, 3, 3]


@pytest.mark.parametrize('h, w', [(10, 13), (13, 10), (11, 16)])
def test_odd_centre_crop_is_the_same_for_tensors_and_image_files(tmp_path, h, w):
    "An odd excess is split with the extra pixel on the far side, by `resize_images` and by the image-folder reader alike."
    a = _columns(h, w)
    s = min(h, w)
    top, left = (h - s)//2, (w - s)//2
    want = torch.from_numpy(a[top:top+s, left:left+s]).permute(2, 0, 1)[None]
    assert torch.equal(resize_images(torch.from_numpy(a).permute(2, 0, 1)[None].contiguous(), s), want)
    (tmp_path/'c').mkdir()
    Image.fromarray(a).save(tmp_path/'c'/'a.png')
    x, _, _ = read_image_folder(tmp_path, size=s, progress=False)
    assert torch.equal(x, want)


def test_resize_rounds_to_the_nearest_grey_level():
    "Downsizing is unbiased: its mean difference from PIL's bicubic resize is ~0 (truncating would make it -0.5)."
    x = torch.randint(0, 256, (1, 3, 40, 40), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    out = resize_images(x, 8).double()
    pil = lambda c: np.asarray(Image.fromarray(x[0, c].numpy()).resize((8, 8), Image.BICUBIC))
    ref = torch.tensor(np.stack([pil(c) for c in range(3)]), dtype=torch.float64)[None]
    assert abs((out - ref).mean().item()) < 0.2


def test_flat_image_folder_is_one_class_named_after_the_folder(tmp_path):
    "Images directly in the folder (no sub-folders) form one class, named after the folder, label 0."
    d = tmp_path/'flowers'
    d.mkdir()
    for i in range(2): Image.fromarray(_columns(4, 4)).save(d/f'{i}.png')
    x, y, names = read_image_folder(d, progress=False)
    assert x.shape == (2, 3, 4, 4) and y.tolist() == [0, 0] and names == ['flowers']


# --- VAE -------------------------------------------------------------------------------------------------

def test_vae_output_float_converts_every_part():
    "`VAEOutput.float()` gives float32 copies of reconstruction, means and log-variances with the same values."
    parts = [torch.tensor([0.5, -1.25], dtype=torch.bfloat16) for _ in range(3)]
    out = VAEOutput(parts).float()
    assert isinstance(out, VAEOutput) and all(t.dtype == torch.float32 for t in out)
    assert all(torch.equal(t, p.float()) for t, p in zip(out, parts))


# --- latents ---------------------------------------------------------------------------------------------

def test_device_tensor_loader_reshuffles_every_epoch_reproducibly():
    "A shuffled loader draws a new permutation each epoch, and the same sequence of them for the same seed."
    x = torch.arange(20.)[:, None]
    epochs = lambda dl: [torch.cat([b[0] for b in dl])[:, 0] for _ in range(3)]
    loader = lambda: DeviceTensorLoader(x, bs=6, shuffle=True, device='cpu', seed=1)
    a, b = epochs(loader()), epochs(loader())
    assert all(torch.equal(e.sort().values, x[:, 0]) for e in a)
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[1], a[2])
    assert all(torch.equal(e, f) for e, f in zip(a, b))



def test_latent_dls_shuffle_training_latents_but_not_validation():
    "The training loader visits the scaled latents in a shuffled order; the validation loader in data order."
    lat = np.arange(32, dtype=np.float32).reshape(32, 1, 1, 1)
    dls = latent_dls(lat, lat, scale=2., bs=8, device='cpu', seed=0)
    tr, va = (torch.cat([b[0] for b in dl]).flatten() for dl in (dls.train, dls.valid))
    want = torch.arange(32.)*2
    assert torch.equal(tr.sort().values, want) and not torch.equal(tr, want) and torch.equal(va, want)


# --- audio -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('f_min, f_max', [(0., None), (500., 2000.), (300., 3000.)])
def test_mel_band_centres_follow_f_min_and_f_max(f_min, f_max):
    "Band centres are evenly spaced on the HTK mel scale between `f_min` and `f_max` (default: Nyquist), to within a bin."
    spec = MelSpec(n_fft=256, n_mels=8, f_min=f_min, f_max=f_max)
    mel = lambda f: 2595*math.log10(1 + f/700)
    hi = f_max or spec.sample_rate/2
    pts = torch.linspace(mel(f_min), mel(hi), spec.n_mels + 2, dtype=torch.float64)[1:-1]
    want = 700*(10**(pts/2595) - 1)
    assert (mel_centers(spec).double() - want).abs().max() <= spec.sample_rate/spec.n_fft


def test_spectrogram_images_peak_normalise_each_clip():
    "A clip and a quieter copy of it give the same uint8 spectrogram (each clip is scaled to full scale first)."
    spec = MelSpec(n_mels=16, n_frames=16)
    loud = sine(700, spec.n_samples, spec.sample_rate)*torch.linspace(0.2, 1, spec.n_samples)
    x = spectrogram_images(AudioClips([loud, 0.05*loud], spec.sample_rate), spec, device='cpu')
    assert x[0].float().std() > 10 and torch.equal(x[0], x[1])


def test_fix_length_does_not_report_clips_of_exactly_the_length(capsys):
    "Only clips longer than `n_samples` count as trimmed; one of exactly that length is kept whole and not reported."
    out = fix_length([torch.ones(3), torch.ones(2)], 3, peak=None)
    assert out.tolist() == [[1., 1., 1.], [1., 1., 0.]] and capsys.readouterr().out == ''


def test_fsdd_int16_samples_scale_to_full_scale_floats(tmp_path, monkeypatch):
    "The archive's int16 samples become x/32768 (full scale -> [-1, 1)), split by the archive's `split` column."
    path = tmp_path/'fsdd.npz'
    np.savez(path, audio=np.array([-32768, 16384, 0, 8192, 32767], np.int16), offsets=np.array([0, 2, 5]),
             labels=np.array([3, 7]), filenames=np.array(['3_a_0.wav', '7_b_9.wav']), split=np.array(['train', 'test']))
    monkeypatch.setattr(maudio, 'find_fsdd', lambda data_dir=None, sample=False, allow_sample=False: path)
    tr, te = load_fsdd('train'), load_fsdd('test')
    assert tr.waves[0].tolist() == [-1., 0.5] and tr.labels.tolist() == [3] and tr.names == ['3_a_0.wav']
    assert te.waves[0].tolist() == [0., 0.25, 32767/32768] and te.labels.tolist() == [7]


def test_peak_frequency_of_a_sine_on_a_bin_is_exact():
    "A sine at an FFT bin frequency (k * rate / 4096) is reported at exactly that frequency."
    for freq in (1000., 62.5*7):
        assert peak_frequency(sine(freq, 4000, 8000), 8000) == pytest.approx(freq, abs=1e-6)


def test_log_spectral_distance_known_values():
    "Halving a clip costs 20*log10(2) dB; a difference 100 dB below the peak costs nothing (under the 80 dB floor)."
    x = sine(440, 4000, 8000)[None]
    assert log_spectral_distance(x, 0.5*x).item() == pytest.approx(20*math.log10(2), abs=1e-3)
    tiny = 1e-5*torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert log_spectral_distance(x, x + tiny).item() < 0.05


def test_log_spectral_distance_is_the_mean_over_frames_of_the_rms_over_frequencies():
    "Agrees with a direct computation: RMS over frequency bins of the floored dB difference, then mean over frames."
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 1000, generator=g), torch.randn(2, 1000, generator=g)*torch.linspace(0, 2, 1000)
    def db(z):
        d = 20*torch.log10(torch.stft(z, 512, 64, window=torch.hann_window(512), return_complex=True).abs().clamp_min(1e-10))
        return torch.maximum(d, d.amax(dim=(1, 2), keepdim=True) - 80)
    diff = db(x) - db(y)                      # (B, freqs, frames)
    want = torch.stack([diff[b].pow(2).mean(0).sqrt().mean() for b in range(2)])
    torch.testing.assert_close(log_spectral_distance(x, y), want)


def test_write_wav_scales_the_loudest_sample_to_peak(tmp_path):
    "`write_wav(peak=0.9)` makes the loudest sample 0.9 whatever the clip's level (to 16-bit precision)."
    for level in (0.3, 2.):
        back, _ = read_wav(write_wav(tmp_path/'a.wav', sine(300, 800, 8000, level), 8000, peak=0.9))
        assert back.abs().max().item() == pytest.approx(0.9, abs=2/32768)


def test_read_wav_mixes_stereo_to_mono(tmp_path):
    "A stereo file reads as the mean of its two channels."
    import soundfile as sf
    left, right = sine(300, 800, 8000, 0.6), sine(500, 800, 8000, 0.2)
    sf.write(str(tmp_path/'s.wav'), torch.stack([left, right], 1).numpy(), 8000, subtype='FLOAT')
    back, rate = read_wav(tmp_path/'s.wav')
    assert rate == 8000
    torch.testing.assert_close(back, (left + right)/2, atol=1e-6, rtol=0)


def test_hf_decoded_stereo_arrays_mix_to_mono():
    "A decoded Hugging Face audio value with a (channels, samples) array becomes the mean of its channels."
    datasets = pytest.importorskip('datasets')
    left, right = sine(300, 50, 8000, 0.6), sine(500, 50, 8000, 0.2)
    ds = datasets.Dataset.from_dict({'audio': [{'array': torch.stack([left, right]).numpy(), 'sampling_rate': 8000}]})
    clips = load_hf_audio(ds, 8000, label_column=None)
    torch.testing.assert_close(clips.waves[0], (left + right)/2)


def test_griffin_lim_starts_from_random_phases_under_the_torch_seed():
    "`waveform` is reproducible under `torch.manual_seed` and differs between seeds (random initial phases)."
    spec = MelSpec(n_mels=16, n_frames=8, n_iter=2)
    img = spec.spectrogram(sine(700, spec.n_samples, spec.sample_rate))
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        runs.append(spec.waveform(img))
    assert torch.equal(runs[0], runs[1]) and not torch.allclose(runs[0], runs[2])



# --- audio diffusion -------------------------------------------------------------------------------------

def _tiny_spectrogram_dls(n: int = 4, bs: int = 2) -> DataLoaders:
    "Loaders of `n` random uint8 64x64 'spectrograms' with digit labels, on the CPU."
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 256, (n, 1, 64, 64), generator=g, dtype=torch.uint8), torch.arange(n) % 10
    mk = lambda shuffle: DeviceImageLoader(x, y, bs=bs, shuffle=shuffle, device='cpu', seed=0)
    return DataLoaders(mk(True), mk(False))


def test_diffusion_learner_drops_labels_with_p_uncond():
    "A class-conditional learner replaces about `p_uncond` of the training labels by the null class (10)."
    model = torch.nn.Linear(1, 1)
    model.n_classes = 10
    learn = diffusion_learner(model, _tiny_spectrogram_dls(), 0.5, p_uncond=0.3, precision=None, progress=False, device='cpu')
    drop = next(cb for cb in learn.cbs if isinstance(cb, DropLabelCB))
    fake = type('FakeLearn', (), {})()
    fake.training, fake.batch = True, (torch.zeros(20000, 1), torch.zeros(20000, dtype=torch.long))
    drop.before_batch(fake)
    assert (fake.batch[1] == 10).float().mean().item() == pytest.approx(0.3, abs=0.02)


@pytest.mark.parametrize('n_classes', [None, 10])
def test_diffusion_learner_trains_with_the_given_sigma_data(n_classes):
    "Both learners noise with the `sigma_data` asked for (sampling uses it too), not the module's default."
    from miniai.diffusion.karras import SIGMA_DATA, noisify_karras
    model = torch.nn.Linear(1, 1)
    if n_classes: model.n_classes = n_classes
    learn = diffusion_learner(model, _tiny_spectrogram_dls(), 0.3, precision=None, progress=False, device='cpu')
    noisify = next(cb for cb in learn.cbs if type(cb).__name__ in ('NoisifyCB', 'CondNoisifyCB')).noisify
    x0, sigma = torch.linspace(-1, 1, 16).view(2, 1, 2, 4), torch.tensor([1., 2.])
    def run(f): torch.manual_seed(0); return f(x0, sigma=sigma)
    (xt, c), target = run(noisify)
    (xt_w, c_w), target_w = run(partial(noisify_karras, sigma_data=0.3))
    assert torch.equal(xt, xt_w) and torch.equal(target, target_w) and SIGMA_DATA != 0.3
    assert not torch.equal(target, run(partial(noisify_karras, sigma_data=SIGMA_DATA))[1])


def test_train_audio_diffusion_returns_the_ema_weights(monkeypatch):
    "With `cfg['ema']`, the returned model holds the averaged weights, not the last training step's."
    monkeypatch.setenv('MINIAI_DEVICE', 'cpu')   # the loaders live on the CPU
    cfg = {**AUDIO_QUICK_CONFIG, 'epochs': 1, 'ema': 0.5}
    model, learn = train_audio_diffusion(_tiny_spectrogram_dls(), 0.5, None, cfg, progress=False)
    ema = next(cb for cb in learn.cbs if isinstance(cb, EMA))
    assert ema.n_updates == 2
    assert all(torch.equal(p, s) for p, s in zip(model.parameters(), ema.shadow))
