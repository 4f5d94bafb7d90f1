"""The full-size networks of the GPU benchmarks, on a CPU.

Quick mode (`--quick`) swaps every benchmark's networks for toy ones, so CI never built the networks a GPU lease
trains: a full-size configuration that fails (a channel count GroupNorm cannot split, an attention grid of the wrong
size, a latent shape the U-Net cannot halve) would have cost a 15-minute lease. Each test builds one benchmark's
full-size networks with the benchmark's own code and takes one training step's forward and backward pass at the real
input shape (batch 2): the output has the input's shape, the loss is finite, and every parameter gets a finite gradient.
`--quick --full-nets` (`tools/gpu_stage.sh STAGE --full-nets`) runs the whole stages this way; its options are tested here.
"""
import importlib, sys
from pathlib import Path

import pytest, torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import benchkit


def bench(name):
    return importlib.import_module(f'bench.{name}')


def step(model, *inputs, shape=None):
    "One forward and backward pass; returns the output. Every parameter must receive a finite gradient."
    torch.manual_seed(0)
    model.train()
    out = model(*inputs)
    out = out if torch.is_tensor(out) else out[0]
    if shape is not None: assert tuple(out.shape) == tuple(shape)
    loss = out.float().pow(2).mean()
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f'parameters without a gradient: {missing[:5]}'
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, bad
    return out


def images(c=1, size=32, n=2): return torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(1))
def times(n=2): return torch.tensor([0.3, 80.])[:n]


def test_karras_full_unet():
    "karras_fid's U-Net (notebook 10): diffusers UNet2DModel (32, 64, 128, 256) with attention, t scaled by 1000."
    net = bench('karras_fid').unet(small=False)
    step(net, images(), times(), shape=(2, 1, 32, 32))
    assert sum(p.numel() for p in net.parameters()) > 10*sum(p.numel() for p in bench('karras_fid').unet(small=True).parameters())


@pytest.mark.parametrize('name', ['emb_unet', 'emb_unet_attn', 'diffusers', 'cond'])
def test_unet_fid_full_networks(name):
    "unet_fid's four networks (notebooks 11-13) at full size; the conditional one with labels and with the null class."
    uf = bench('unet_fid')
    net = uf.build(name, small=False)
    args = (images(), times()) + ((torch.tensor([3, 9]),) if name == 'cond' else ())
    step(net, *args, shape=(2, 1, 32, 32))
    if name == 'cond':
        with torch.no_grad(): assert net(images(), times()).shape == (2, 1, 32, 32)   # null class
    if name == 'emb_unet_attn':
        assert any('attn' in n.lower() for n, _ in net.named_modules()) and not any(
            'attn' in n.lower() for n, _ in uf.build('emb_unet', small=False).named_modules())


def test_noise_level_full_networks():
    "noise_level_fid's no-t U-Net and the noise-level regressor at full size; full recipes keep their identity."
    nl = bench('noise_level_fid')
    full, fn = nl.configs(False), nl.configs(True, full_nets=True)
    assert 'full_nets' not in full['regressor'] and 'full_nets' not in full['no_t']   # saved full-size weights still match
    assert fn['regressor']['nfs'] is None and fn['regressor']['full_nets'] and fn['no_t']['full_nets']
    assert fn['regressor']['epochs'] == nl.configs(True)['regressor']['epochs'] == 1   # quick training, full networks
    assert nl.configs(True)['regressor']['nfs'] == (8, 16, 32, 64)
    step(nl.build('no_t', fn['no_t']), images(), shape=(2, 1, 32, 32))
    full_no_t, quick_no_t = nl.build('no_t', full['no_t']), nl.build('no_t', nl.configs(True)['no_t'])
    assert sum(p.numel() for p in nl.build('no_t', fn['no_t']).parameters()) == sum(p.numel() for p in full_no_t.parameters()) \
        > sum(p.numel() for p in quick_no_t.parameters())
    out = step(nl.build('regressor', full['regressor']), images())
    assert out.numel() == 2


def test_latent_full_networks():
    "latent_fid's FULL sizes at 64x64: the VAE (3 levels, mid attention), the latent U-Net, the pixel U-Net, the FID classifier."
    lf = bench('latent_fid')
    from miniai.latents import conv_vae
    from miniai.models.unet import EmbUNetModel
    from miniai.images import image_classifier
    cfg = lf.FULL
    x = images(3, 64)
    vae = conv_vae(**cfg['vae'], image_size=64)
    step(vae, x, shape=(2, 3, 64, 64))
    with torch.no_grad(): z = vae.encode(x)
    assert z.shape == (2, 4, 16, 16)
    step(EmbUNetModel(4, 4, **cfg['unet']), z, times(), shape=z.shape)
    pix_cfg = lf.pixel_unet_config(cfg['unet'])
    assert pix_cfg['nfs'] == (64, 128, 256, 384) and pix_cfg['attn_start'] == 2   # one more level: attention at the same grid sizes
    step(EmbUNetModel(3, 3, **pix_cfg), x, times(), shape=x.shape)
    step(image_classifier(20, 3, cfg['clf_nfs']), x, shape=(2, 20))


def test_audio_full_networks():
    "audio_eval's AUDIO_CONFIG networks on (1, 64, 64) spectrograms: the simple-diffusion U-Net with and without labels, the digit classifier."
    from miniai.audio import MelSpec
    from miniai.audio_diffusion import AUDIO_CONFIG, digit_classifier, simple_diffusion
    shape = MelSpec().shape
    x = images(shape[0], shape[1])
    step(simple_diffusion(AUDIO_CONFIG), x, times(), shape=x.shape)
    step(simple_diffusion(AUDIO_CONFIG, 10), x, times(), torch.tensor([0, 7]), shape=x.shape)
    step(digit_classifier(AUDIO_CONFIG['clf_nfs']), x, shape=(2, 10))
    ae = bench('audio_eval')
    assert set(ae.NET_KEYS) <= set(AUDIO_CONFIG)


# ---- the --full-nets option ----------------------------------------------------------------------------------

@pytest.mark.parametrize('script', ['karras_fid', 'unet_fid', 'noise_level_fid'])
def test_full_nets_needs_quick(script, capsys):
    "`--full-nets` alone is refused (without --quick everything is full-size); with --quick it parses."
    mod = bench(script)
    with pytest.raises(SystemExit) as e: mod.parse_args(['--out', 'x.json', '--full-nets'])
    assert e.value.code == 2 and '--full-nets goes with --quick' in capsys.readouterr().err
    args = mod.parse_args(['--out', 'x.json', '--quick', '--full-nets'])
    assert args.full_nets and args.quick and not benchkit.small_nets(args) and benchkit.size_tag(args) == 'quick_full_nets'


@pytest.mark.parametrize('script', ['latent_fid', 'audio_eval'])
def test_full_nets_needs_quick_own_parsers(script, capsys):
    "The latent and audio benchmarks (their own parsers) refuse `--full-nets` without `--quick` too."
    mod = bench(script)
    with pytest.raises(SystemExit) as e:
        if script == 'latent_fid': mod.main(['--out', 'x.json', '--full-nets'])
        else: mod.parse_args(['--out', 'x.json', '--full-nets'])
    assert e.value.code == 2 and '--full-nets goes with --quick' in capsys.readouterr().err


def test_size_tags():
    "Weights of the three sizes never share a file name; tiny networks only in plain quick mode."
    from argparse import Namespace as N
    cases = {(False, False): ('full', False), (True, False): ('quick', True), (True, True): ('quick_full_nets', False)}
    for (quick, fn), (tag, small) in cases.items():
        a = N(quick=quick, full_nets=fn)
        assert benchkit.size_tag(a) == tag and benchkit.small_nets(a) is small
    assert benchkit.size_tag(N(quick=True)) == 'quick' and benchkit.small_nets(N(quick=True))   # a script without the option


def test_gpu_stage_full_nets_argument():
    "tools/gpu_stage.sh takes --full-nets only for the stages whose full-size networks never ran on a GPU."
    import subprocess
    sh = Path(__file__).resolve().parents[1]/'tools'/'gpu_stage.sh'
    for stage in ('ddpm', 'base', 'check'):
        r = subprocess.run(['bash', str(sh), stage, '--full-nets'], capture_output=True, text=True)
        assert r.returncode == 2 and 'only for stages karras noise_level unet latent audio' in r.stderr
    r = subprocess.run(['bash', str(sh), 'karras', '--fast'], capture_output=True, text=True)
    assert r.returncode == 2 and '--quick or --full-nets' in r.stderr


def test_runbook_flop_counts_match_the_configs():
    "docs/gpu_runbook.md sizes the latent and audio leases by FLOPs per training image: those figures are the configs' own."
    from miniai.latents import conv_vae, train_flops_per_image
    from miniai.models.unet import EmbUNetModel
    from miniai.audio_diffusion import AUDIO_CONFIG, simple_diffusion
    from miniai.diffusion.ddpm import diffusers_unet
    lf = bench('latent_fid')
    g = lambda f: f'{f/1e9:.1f}'
    doc = (Path(__file__).resolve().parents[1]/'docs'/'gpu_runbook.md').read_text().replace('\n', ' ')
    want = [f"{g(train_flops_per_image(conv_vae(**lf.FULL['vae'], image_size=64), (3, 64, 64), time_input=False))} GFLOPs per 64x64 image",
            f"{g(train_flops_per_image(EmbUNetModel(4, 4, **lf.FULL['unet']), (4, 16, 16)))} GFLOPs per 4x16x16 latent",
            f"{g(train_flops_per_image(EmbUNetModel(3, 3, **lf.pixel_unet_config(lf.FULL['unet'])), (3, 64, 64)))} GFLOPs per image",
            f"{g(train_flops_per_image(simple_diffusion(AUDIO_CONFIG, 10), (1, 64, 64)))} GFLOPs per 64x64 spectrogram",
            f"Fashion-MNIST U-Net ({train_flops_per_image(diffusers_unet(), (1, 32, 32))/1e9:.2f} GFLOPs per image)"]   # the rate's yardstick
    assert all(w in doc for w in want), [w for w in want if w not in doc]


# ---- --full-nets reaches the networks each script trains (stubbed training: the built network and its file) -------

class FakeLearn:
    "Stands in for a Learner: `fit` runs only the bench's own timer callback (if any), and trains nothing."
    def __init__(self, model, cbs=()): self.model, self.cbs, self.start_epoch = model, list(cbs), 0
    metrics = type('M', (), {'history': []})()
    def fit(self, n):
        for cb in self.cbs:
            if type(cb).__name__ == 'TrainTimer': cb.before_fit(self)


def _trained(monkeypatch, mod, learner_names):
    "Stub `mod`'s data and learners; return the list of (parameter count, file name, saved config) that save_weights receives."
    import json
    from types import SimpleNamespace
    saved = []
    train = SimpleNamespace(dataset_len=8, drop_last=False)
    monkeypatch.setattr(mod, 'fashion_dls', lambda **kw: SimpleNamespace(train=train, valid=None))
    for name in learner_names:
        monkeypatch.setattr(mod, name, lambda model, *a, cbs=(), **k: FakeLearn(model, cbs))
    monkeypatch.setattr(mod, 'save_weights', lambda model, path, meta: saved.append(
        (sum(p.numel() for p in model.parameters()), Path(path).name, json.loads(meta['config']))))
    return saved


@pytest.mark.parametrize('full_nets', [False, True])
def test_karras_fid_quick_trains_the_size_asked_for(tmp_path, monkeypatch, full_nets):
    "karras_fid --quick trains the tiny U-Net, --quick --full-nets the lesson's, each under its own weights name and config."
    import json
    kf = bench('karras_fid')
    saved = _trained(monkeypatch, kf, ['karras_learner'])
    out = tmp_path/'k.json'
    kf.main(['--quick', *(['--full-nets'] if full_nets else []), '--ema', '0', '--weights-dir', str(tmp_path), '--out', str(out),
             '--train-only', 'karras'])
    (n, name, cfg), = saved
    assert n == sum(p.numel() for p in kf.unet(small=not full_nets).parameters())
    assert name == f"bench_karras_{'quick_full_nets' if full_nets else 'quick'}.safetensors"
    assert cfg.get('full_nets', False) is full_nets and json.loads(out.read_text())['config']['karras'].get('full_nets', False) is full_nets


@pytest.mark.parametrize('full_nets', [False, True])
def test_unet_fid_quick_trains_the_size_asked_for(tmp_path, monkeypatch, full_nets):
    "unet_fid --quick trains toy networks, --quick --full-nets the full-size ones (the conditional one too), under their own names."
    import json
    uf = bench('unet_fid')
    saved = _trained(monkeypatch, uf, ['karras_learner', 'cond_learner'])
    out = tmp_path/'u.json'
    uf.main(['--quick', *(['--full-nets'] if full_nets else []), '--weights-dir', str(tmp_path), '--out', str(out),
             '--train-only', 'emb_unet', 'cond'])
    tag = 'quick_full_nets' if full_nets else 'quick'
    assert [(n, name) for n, name, _ in saved] == [
        (sum(p.numel() for p in uf.build(m, small=not full_nets).parameters()), f'bench_unet_{m}_{tag}.safetensors') for m in ('emb_unet', 'cond')]
    assert all(c.get('full_nets', False) is full_nets for *_, c in saved)
    assert json.loads(out.read_text())['config']['train'].get('full_nets', False) is full_nets
