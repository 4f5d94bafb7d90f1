#!/usr/bin/env python
"""Latent diffusion vs pixel diffusion on RGB photos: FID table (notebook 15 at full size); results go to a JSON file.

Steps (all with miniai's exported functions, as in nbs/15_latent_diffusion.ipynb):
1. load the image set (default: clothing64, 5,398 photos 64x64, 20 classes) with a 15% class-balanced held-out split;
2. train the FID classifier on the training split (`train_image_classifier`), reference = held-out images;
3. the VAE: train diffusers' `AutoencoderKL` from a config (`conv_vae`, `conv_vae_learner`), or with
   `--pretrained-vae` use Stable Diffusion's VAE (needs the Hugging Face hub);
4. encode train and held-out images into validated latent caches; measure the latent scale (1/std);
5. train `EmbUNetModel` on the scaled latents (Karras objective) and sample + decode;
6. train the same U-Net (one more, narrower level) on pixels with the same training FLOPs as the latent U-Net
   (counted by `FlopCounterMode`, rounded to whole epochs), and sample. The VAE's training is not counted (a VAE is
   trained once and serves every latent model after it); `compute` in the JSON records all three budgets, so the
   other reading of "equal compute" can be checked against them;
7. FID and KID of (real training images, VAE reconstructions, latent diffusion samples, pixel diffusion samples)
   against the held-out images, all with as many images as the held-out split holds;
8. lesson 25's classifier on latents (`train_latent_classifier`, per-channel normalised latents), its held-out accuracy
   beside the pixel classifier's of step 2: how much of the classes the latents keep.

On a GPU (from the repository root; needs $MINIAI_DATA or --data-dir):
    python bench/latent_fid.py --out results/latent_fid.json
(the configured training is about 35 PFLOPs; tools/gpu_stage.sh adds `--train-minutes 8`, which times each network first
and trains fewer epochs if the configured ones would not fit; docs/gpu_runbook.md)
Anywhere, to check that it runs (32x32 images, a few hundred of them, toy models; figures meaningless):
    python bench/latent_fid.py --quick --out /tmp/latent_fid_quick.json
and with the full-size networks at the images' full size (`--full-nets`: FULL's sizes, QUICK's data and epochs):
    python bench/latent_fid.py --quick --full-nets --out /tmp/latent_fid_full_nets.json
"""
import argparse, datetime, math, platform, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing miniai
import torch
from bench.benchkit import add_full_nets_arg, bench_out, count, command_line, keep_rng, parse_bench_args, positive, seconds_per_image, size_tag, write_json
from miniai.core import cache_dir, default_device, set_seed
from miniai.accel import synchronize
from miniai.data import DataLoaders
from miniai.images import image_dls, image_fid_eval, images_to_float, load_image_set, train_image_classifier
from miniai.latents import (ConvVAELoss, DeviceTensorLoader, PretrainedVAEUnavailable, cached_latents, conv_vae, conv_vae_learner,
                            decode_latents, latent_channel_stats, latent_dls, latent_stats, load_pretrained_vae, perceptual_net,
                            psnr, reconstruct, sample_batches, train_flops_per_image, train_latent_classifier)
from miniai.models.unet import EmbUNetModel, n_params
from miniai.diffusion.karras import karras_learner

FULL = dict(size=None, limit=None, clf_epochs=30, clf_nfs=(32, 64, 128, 256),
            vae=dict(channels=(64, 128, 256)), vae_epochs=100, vae_bs=64, vae_lr=1e-3,
            unet=dict(nfs=(128, 256, 384), num_layers=2, attn_chans=32, attn_start=1),
            epochs=200, bs=128, lr=3e-3, steps=40, sample_bs=256,
            lclf_epochs=40, lclf_nfs=(32, 64, 128, 256), lclf_nbks=(1, 2, 4))
QUICK = dict(size=32, limit=(256, 96), clf_epochs=1, clf_nfs=(8, 16, 32),
             vae=dict(channels=(8, 16), norm_groups=4, mid_attention=False), vae_epochs=1, vae_bs=32, vae_lr=2e-3,
             unet=dict(nfs=(16, 32), num_layers=1, attn_chans=0),
             epochs=2, bs=64, lr=3e-3, steps=8, sample_bs=128,
             lclf_epochs=1, lclf_nfs=(8, 16, 32), lclf_nbks=(1, 1))
NET_KEYS = ('size', 'clf_nfs', 'vae', 'unet', 'lclf_nfs', 'lclf_nbks')   # what `--quick --full-nets` takes from FULL: the networks and the image size


class Timer:
    "Wall-clock seconds of a block, with the device synchronised at both ends."
    def __enter__(self): synchronize(); self.t0 = time.perf_counter(); return self
    def __exit__(self, *exc): synchronize(); self.s = time.perf_counter() - self.t0


def pixel_unet_config(u: dict) -> dict:
    "The pixel U-Net's config from the latent U-Net's `u`: one more, narrower level in front (pixels are 4x the latents' side), attention one level later."
    return {**u, 'nfs': (u['nfs'][0]//2, *u['nfs']), 'attn_start': u.get('attn_start', 1) + 1}


def vae_loss(args, clf) -> ConvVAELoss:
    "The VAE's loss for `args` (KL weight, optional perceptual term on the FID classifier `clf`'s features)."
    return ConvVAELoss(args.kl_weight, perceptual_net(clf) if args.perceptual else None, args.perceptual)


def measure_rates(imset, cfg: dict, args, clf) -> dict:
    "Training seconds per image of the VAE, the latent U-Net and the pixel U-Net of `cfg`, each timed on a throwaway copy."
    dev = default_device()
    def vae_learner():
        vae = conv_vae(**cfg['vae'], image_size=imset.shape[-1])
        return conv_vae_learner(vae, image_dls(imset, bs=cfg['vae_bs'], seed=0), vae_loss(args, clf), lr=cfg['vae_lr'], progress=False)
    def latent_learner():
        lat = torch.randn(cfg['bs']*4, *lat_shape)
        dls = DataLoaders(DeviceTensorLoader(lat, cfg['bs'], shuffle=True, drop_last=True, device=dev, seed=0),
                          DeviceTensorLoader(lat[:cfg['bs']], cfg['bs'], device=dev))
        return karras_learner(EmbUNetModel(lat_shape[0], lat_shape[0], **cfg['unet']), dls, sigma_data=1., lr=cfg['lr'], progress=False)
    def pixel_learner():
        return karras_learner(EmbUNetModel(3, 3, **pixel_unet_config(cfg['unet'])), image_dls(imset, bs=cfg['bs'], seed=0),
                              sigma_data=0.5, lr=cfg['lr'], progress=False)
    with keep_rng():
        probe = conv_vae(**cfg['vae'], image_size=imset.shape[-1])   # (only its latent shape is used)
        lat_shape = (probe.latent_channels, imset.shape[-2]//probe.factor, imset.shape[-1]//probe.factor)
        flops = dict(latent=train_flops_per_image(EmbUNetModel(lat_shape[0], lat_shape[0], **cfg['unet']).to(dev), lat_shape),
                     pixel=train_flops_per_image(EmbUNetModel(3, 3, **pixel_unet_config(cfg['unet'])).to(dev), imset.shape))
    return dict(vae=seconds_per_image(vae_learner, cfg['vae_bs']), latent=seconds_per_image(latent_learner, cfg['bs']),
                pixel=seconds_per_image(pixel_learner, cfg['bs']), flops_per_image=flops)


def plan_epochs(cfg: dict, n_train: int, n_test: int, rates: dict, budget_s: float) -> dict:
    """Epochs of the VAE and of the latent U-Net (the pixel U-Net's follow, at equal training FLOPs) that fit `budget_s`
    seconds of training at the measured `rates` (`measure_rates`): `cfg`'s own, or both scaled down by one factor.
    Each epoch also validates on the `n_test` held-out images (a forward pass: a third of a training step, roughly)."""
    images = lambda bs: n_train//bs*bs + n_test/3   # (full training batches only)
    fl = rates['flops_per_image']
    pix_epochs = lambda e: max(1., e*fl['latent']/fl['pixel'])
    def seconds(vae_epochs, epochs):
        return (vae_epochs*images(cfg['vae_bs'])*rates['vae'] + epochs*images(cfg['bs'])*rates['latent']
                + pix_epochs(epochs)*images(cfg['bs'])*rates['pixel'])
    planned = seconds(cfg['vae_epochs'], cfg['epochs'])
    scale = min(1., budget_s/planned)
    vae_epochs, epochs = max(1, int(cfg['vae_epochs']*scale)), max(1, int(cfg['epochs']*scale))
    return dict(budget_s=budget_s, seconds_per_image={k: rates[k] for k in ('vae', 'latent', 'pixel')},
                flops_per_image=fl, planned=dict(vae_epochs=cfg['vae_epochs'], epochs=cfg['epochs'], train_s=planned),
                scale=scale, vae_epochs=vae_epochs, epochs=epochs, estimated_train_s=seconds(vae_epochs, epochs))


def train_vae(imset, cfg, args, clf):
    "Train a `conv_vae` on the training split; returns the VAE and a dict of facts about it."
    set_seed(args.seed + 1)
    vae = conv_vae(**cfg['vae'], image_size=imset.shape[-1])
    loss = vae_loss(args, clf)
    learn = conv_vae_learner(vae, image_dls(imset, bs=cfg['vae_bs'], seed=args.seed + 1), loss, lr=cfg['vae_lr'],
                             progress=args.progress)
    with Timer() as t: learn.fit(cfg['vae_epochs'])
    steps, fpi = cfg['vae_epochs']*len(learn.dls.train), train_flops_per_image(vae, imset.shape, time_input=False)
    return vae, dict(kind='trained AutoencoderKL', config=cfg['vae'], params=n_params(vae), epochs=cfg['vae_epochs'],
                     steps=steps, kl_weight=args.kl_weight, perceptual_weight=args.perceptual, train_s=t.s,
                     train_flops_per_image=fpi, train_flops=fpi*steps*cfg['vae_bs'], history=learn.metrics.history)


def train_unet(model, dls, sigma_data, epochs, lr, args):
    "Train `model` with the Karras objective; returns steps and wall seconds."
    learn = karras_learner(model, dls, sigma_data=sigma_data, lr=lr, progress=args.progress)
    with Timer() as t: learn.fit(epochs)
    return dict(epochs=epochs, steps=epochs*len(dls.train), train_s=t.s, final=learn.metrics.history[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default=None, help='results file (JSON; default: results/latent_fid.json, runs/quick/latent_fid.json with --quick)')
    p.add_argument('--quick', action='store_true', help='toy sizes (checks that it runs; figures meaningless)')
    p.add_argument('--source', default='clothing64', help="image set: a name, an .npz, an image folder, or 'hf:name'")
    p.add_argument('--data-dir', default=None, help='folder searched for named image sets (default: $MINIAI_DATA)')
    p.add_argument('--size', type=count(), default=None, help='resize images to SIZE x SIZE (default: as stored; quick: 32)')
    p.add_argument('--pretrained-vae', action='store_true', help="use Stable Diffusion's VAE from the hub if reachable")
    p.add_argument('--perceptual', type=float, default=0., help='weight of the perceptual term of the VAE loss')
    p.add_argument('--kl-weight', type=float, default=1e-4, help='weight of the KL term of the VAE loss')
    p.add_argument('--sampler', default='dpmpp_2m', help='Karras-schedule sampler (miniai.diffusion.ksamplers.SAMPLERS)')
    p.add_argument('--steps', type=count(), default=None, help='sampling steps (default 40; quick 8)')
    p.add_argument('--cache', default=None, help="latent cache folder (default: miniai's cache_dir('latents'))")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--no-progress', dest='progress', action='store_false')
    p.add_argument('--train-minutes', type=positive, default=None,
                   help='fit the training into this many minutes: time each network for a few batches first, and if the '
                        'planned epochs would take longer, scale the VAE and latent U-Net epochs down by one factor '
                        '(recorded under time_budget; default: the configured epochs, however long)')
    add_full_nets_arg(p)
    args = parse_bench_args(p, argv)
    args.out = str(bench_out(p, args.out, args.quick, 'latent_fid.json'))
    if args.train_minutes is not None and args.pretrained_vae:   # (its latent shape is another; and a failed download trains one)
        p.error('--train-minutes plans the epochs of the VAE trained here and of U-Nets on its latents; it does not go with --pretrained-vae')
    cfg = dict(QUICK if args.quick else FULL)
    if args.full_nets: cfg.update({k: FULL[k] for k in NET_KEYS}, full_nets=True)
    if args.size: cfg['size'] = args.size
    steps = args.steps or cfg['steps']
    dev = default_device()
    res = dict(command=command_line(__file__, argv), quick=args.quick, full_nets=args.full_nets, started=datetime.datetime.now().isoformat(timespec='seconds'),
               device=torch.cuda.get_device_name() if dev.type == 'cuda' else str(dev), torch=torch.__version__,
               python=platform.python_version(), config=cfg, sampler=args.sampler, sampling_steps=steps)

    set_seed(args.seed)
    imset = load_image_set(args.source, args.data_dir, size=cfg['size'], limit=cfg['limit'], seed=args.seed,
                           allow_sample=args.quick)
    res['data'] = dict(source=imset.source, shape=list(imset.shape), n_train=len(imset.train_x), n_test=len(imset.test_x),
                       n_classes=imset.n_classes)
    print(imset, flush=True)

    with Timer() as t: clf, acc = train_image_classifier(imset, cfg['clf_epochs'], nfs=cfg['clf_nfs'], seed=args.seed + 42,
                                                        progress=args.progress)
    ie = image_fid_eval(clf, imset.test_x)
    res['fid_classifier'] = dict(nfs=cfg['clf_nfs'], epochs=cfg['clf_epochs'], test_accuracy=acc, train_s=t.s,
                                 features=cfg['clf_nfs'][-1])
    print(f"FID classifier: test accuracy {acc:.3f}", flush=True)
    write_json(res, args.out)   # after every phase: a lease cut short still returns what finished

    if args.train_minutes is not None:
        with Timer() as t: rates = measure_rates(imset, cfg, args, clf)
        plan = plan_epochs(cfg, len(imset.train_x), len(imset.test_x), rates, 60*args.train_minutes)
        cfg.update(vae_epochs=plan['vae_epochs'], epochs=plan['epochs'])
        res['time_budget'], res['config'] = dict(plan, probe_s=t.s), cfg
        print(f"time budget: {args.train_minutes} min of training; planned epochs would take {plan['planned']['train_s']:.0f} s, "
              f"so VAE {plan['vae_epochs']} and U-Net {plan['epochs']} epochs (x{plan['scale']:.2f}; "
              f"estimate {plan['estimated_train_s']:.0f} s)", flush=True)
        write_json(res, args.out)

    vae = None
    if args.pretrained_vae:
        try: vae = load_pretrained_vae().to(dev); res['vae'] = dict(kind='pretrained stabilityai/sd-vae-ft-ema')
        except PretrainedVAEUnavailable as e: res['vae_pretrained_error'] = str(e); print(f"pretrained VAE unavailable: {e}")
    if vae is None: vae, res['vae'] = train_vae(imset, cfg, args, clf)
    xt = images_to_float(imset.test_x)
    rec = reconstruct(vae, imset.test_x)
    res['vae'].update(test_mse=torch.nn.functional.mse_loss(rec, xt).item(), test_psnr_db=psnr(rec, xt))
    print(f"VAE: held-out MSE {res['vae']['test_mse']:.4f}, PSNR {res['vae']['test_psnr_db']:.2f} dB", flush=True)
    write_json(res, args.out)

    root = Path(args.cache) if args.cache else cache_dir('latents')
    tag = f"{Path(str(imset.source)).stem}_{imset.shape[-1]}{'' if not args.quick else '_' + size_tag(args)}"   # (the VAE's size too)
    with Timer() as t:
        lat = cached_latents(root/f'{tag}_train.lat', vae, imset.train_x, progress=args.progress)
        lat_test = cached_latents(root/f'{tag}_test.lat', vae, imset.test_x, progress=args.progress)
    mean, std = latent_stats(lat)
    scale = 1/std
    res['latents'] = dict(shape=list(lat.shape[1:]), mean=mean, std=std, scale=scale, cache_s=t.s,
                          compression=math.prod(imset.shape)/math.prod(lat.shape[1:]))

    lc = lat.shape[1]
    set_seed(args.seed + 2)
    ldm = EmbUNetModel(lc, lc, **cfg['unet'])
    dls = latent_dls(lat, lat_test, scale, bs=cfg['bs'], seed=args.seed + 2)
    flops_lat = train_flops_per_image(ldm.to(dev), lat.shape[1:])
    res['latent_unet'] = dict(params=n_params(ldm), train_flops_per_image=flops_lat,
                              **train_unet(ldm, dls, 1., cfg['epochs'], cfg['lr'], args))
    res['latent_unet']['train_flops'] = flops_lat*res['latent_unet']['steps']*cfg['bs']
    write_json(res, args.out)

    pix_cfg = pixel_unet_config(cfg['unet'])
    set_seed(args.seed + 2)
    pix = EmbUNetModel(3, 3, **pix_cfg).to(dev)
    flops_pix = train_flops_per_image(pix, imset.shape)
    pix_dls = image_dls(imset, bs=cfg['bs'], seed=args.seed + 2)
    pix_epochs = max(1, round(res['latent_unet']['steps']*flops_lat/flops_pix/len(pix_dls.train)))
    pix_sd = images_to_float(imset.train_x).std().item()
    res['pixel_unet'] = dict(config={k: list(v) if isinstance(v, tuple) else v for k, v in pix_cfg.items()}, params=n_params(pix),
                             sigma_data=pix_sd, train_flops_per_image=flops_pix,
                             **train_unet(pix, pix_dls, pix_sd, pix_epochs, cfg['lr'], args))
    res['pixel_unet']['train_flops'] = flops_pix*res['pixel_unet']['steps']*cfg['bs']
    res['compute'] = dict(rule="the pixel U-Net's training FLOPs match the latent U-Net's; the VAE's training is not counted",
                          vae_train_flops=res['vae'].get('train_flops'), latent_unet_train_flops=res['latent_unet']['train_flops'],
                          pixel_unet_train_flops=res['pixel_unet']['train_flops'])
    write_json(res, args.out)

    n = len(imset.test_x)
    pick = torch.randperm(len(imset.train_x), generator=torch.Generator().manual_seed(args.seed))[:n]
    kw = dict(sampler=args.sampler, steps=steps, bs=cfg['sample_bs'], seed=args.seed + 100, progress=args.progress)
    def score(name, draw, sampled=True):   # each row scored and written as soon as its images exist (a lease cut short keeps it)
        with Timer() as t: x = draw()
        s = ie.scores(x)
        res['fid'].append(dict(images=name, n=s['n'], fid=s['fid'], kid=s['kid'], sampling_s=t.s if sampled else None))
        print(f"{name:48s} FID {s['fid']:8.3f}  KID {s['kid']:.5f}", flush=True)
        write_json(res, args.out)
    res['fid'] = []
    score('real training images', lambda: images_to_float(imset.train_x[pick]), sampled=False)
    score('VAE reconstructions (training images)', lambda: reconstruct(vae, imset.train_x[pick]), sampled=False)
    score('latent diffusion samples', lambda: decode_latents(vae, sample_batches(ldm, n, lat.shape[1:], 1., **kw), scale))
    score('pixel diffusion samples (same U-Net training FLOPs)', lambda: sample_batches(pix, n, imset.shape, pix_sd, **kw).clamp(-1, 1))

    ch_mean, ch_std = latent_channel_stats(lat)
    cls_dls = latent_dls(lat, lat_test, 1/ch_std, bs=cfg['bs'], seed=args.seed + 3, shift=ch_mean, labels=(imset.train_y, imset.test_y))
    with Timer() as t: _, lacc = train_latent_classifier(cls_dls, imset.n_classes, cfg['lclf_epochs'], nfs=cfg['lclf_nfs'],
                                                        nbks=cfg['lclf_nbks'], seed=args.seed + 3, progress=args.progress)
    res['latent_classifier'] = dict(nfs=cfg['lclf_nfs'], nbks=cfg['lclf_nbks'], epochs=cfg['lclf_epochs'], test_accuracy=lacc,
                                    pixel_classifier_test_accuracy=acc, channel_mean=ch_mean.tolist(), channel_std=ch_std.tolist(),
                                    train_s=t.s)
    print(f"classifier on latents: test accuracy {lacc:.3f} (on pixels: {acc:.3f})", flush=True)

    res['finished'] = datetime.datetime.now().isoformat(timespec='seconds')
    write_json(res, args.out)
    print(f"wrote {args.out}")


if __name__ == '__main__': main()
