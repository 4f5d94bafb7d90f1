#!/usr/bin/env python
"""FID/KID of a diffusion model trained without t: naive DDIM against DDIM with a noise-level regressor's ᾱ (issue 5).

Notebook 09_noise_pred at full size, with its exported pieces, as one measurement:
1. the noise-level regressor (notebook 04's ResNet with a 1-output head, dropout 0.2, 20 epochs, one-cycle 1e-2,
   Adam eps 1e-5) predicting logit(ᾱ) of noisy Fashion-MNIST images; its test MSE against always predicting 0
   (expected π²/3 = 3.29), on the same seeded noisings of the 10,000 test images (course: 0.075 after 20 epochs);
2. the cosine model of notebook 08 that never sees t (`NoTimeModel`: diffusers UNet (32, 64, 128, 256), 25 epochs,
   batch 512, one-cycle 4e-3);
3. FID/KID (notebook 05's evaluator) of 10,000 seeded samples (and their first 2,048) from DDIM-100 (eta 1) with the
   scheduled ᾱ (the naive sampler; course: FID 22.3) and with the regressor's per-image ᾱ clamped around the batch
   median (course: 3.88), and of as many seeded real training images (the floor; FID / floor compares across
   feature networks);
4. the KID of x0-hat after every step of both samplers, on the first sampling batch (`kid_per_step`; the lecture saw
   the corrected sampler's quality "get worse for a while" along the way).

On a GPU (from the repository root; resumable: trained networks in --weights-dir, finished rows in the JSON):
    python bench/noise_level_fid.py --out results/noise_level_fid.json
`--train-only regressor` / `--train-only no_t` train one network and stop (tools/gpu_stage.sh runs one process per
compiled model). Anywhere, to check that it runs (tiny networks, tiny classifier, few samples; numbers meaningless):
    python bench/noise_level_fid.py --quick --out /tmp/noise_level_quick.json
    python bench/noise_level_fid.py --quick --full-nets --out /tmp/noise_level_full_nets.json   # the full-size networks
"""
from __future__ import annotations
import json, math, sys, time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing miniai
import torch
from torch import nn
from miniai.accel import synchronize
from miniai.cli import fid_evaluator
from miniai.core import batch_seed, cache_dir, default_device, run_environment, set_seed
from miniai.data import fashion_dls
from miniai.diffusion.cosine import cosine_ddim_sample, noisify_cosine
from miniai.diffusion.ddpm import ddpm_learner, diffusers_unet, init_ddpm
from miniai.diffusion.noise_level import NoTimeModel, kid_along_sampling, noise_level_ddim_sample, noise_level_learner, noise_level_model, noisify_noise_level
from miniai.fid import fashion_fid_images, weights_hash
from miniai.models.resnet import load_weights, save_weights, weights_metadata
from bench.benchkit import count, parse_bench_args, command_line, compile_callbacks, compile_mode, fid_bench_parser, forget_rows, log_run, start_again_if_other_feature_network, resume, runs_markdown, write_results

NETS = ('regressor', 'no_t')
SAMPLERS = ('naive DDIM (scheduled ᾱ)', "DDIM with the regressor's ᾱ")


def parse_args(argv=None):
    p = fid_bench_parser(__doc__, 'tiny networks and classifier, few samples and steps', 'networks')
    p.add_argument('--steps', type=count(), default=100, help='DDIM steps')
    p.add_argument('--train-only', nargs='+', choices=NETS, default=None, help='train (or find) these networks and stop')
    return parse_bench_args(p, argv)


def configs(quick: bool, full_nets: bool = False) -> dict:
    "Each network's training recipe (its identity: saved weights are reused only for the same recipe); `full_nets`: full-size networks on quick data."
    small = quick and not full_nets
    cfgs = {'regressor': dict(epochs=1 if quick else 20, lr=3e-3 if quick else 1e-2, bs=64 if quick else 512,
                              nfs=(8, 16, 32, 64) if small else None, drop=0.2, stem_dropout=False, quick=quick),   # (no Dropout2d: weights of the older layout are not reused)
            'no_t': dict(epochs=1 if quick else 25, lr=3e-3 if quick else 4e-3, bs=64 if quick else 512, quick=quick)}
    if quick and full_nets:
        for c in cfgs.values(): c['full_nets'] = True
    return cfgs


def _small(cfg: dict) -> bool:
    "Whether recipe `cfg` builds the tiny networks (quick mode without `full_nets`)."
    return cfg['quick'] and not cfg.get('full_nets')


def build(name: str, cfg: dict) -> nn.Module:
    "A fresh network `name` for its recipe `cfg`."
    if name == 'regressor':
        return noise_level_model(**({'nfs': cfg['nfs']} if cfg['nfs'] else {}), drop=cfg['drop'])
    unet = diffusers_unet((16, 32), layers_per_block=1, attention=(False, False), t_scale=1000) if _small(cfg) \
        else diffusers_unet(t_scale=1000)
    return NoTimeModel(init_ddpm(unet))


def train_or_load(name: str, cfg: dict, args, results: dict) -> nn.Module:
    "Network `name` trained with `cfg`: loaded if saved weights have that recipe, else trained and saved (eval mode)."
    log = results['train']
    path = Path(args.weights_dir or cache_dir('models'))/f"bench_noise_level_{name}_{'full' if not cfg['quick'] else 'quick' if _small(cfg) else 'quick_full_nets'}.safetensors"
    model, meta = build(name, cfg), {'config': json.dumps(cfg, sort_keys=True)}
    if path.exists() and weights_metadata(path).get('config') == meta['config']:
        print(f"{name}: loading {path}", flush=True)
        log[name] = json.loads(weights_metadata(path).get('train', '{}'))
        return load_weights(model, path).to(default_device()).eval()
    # both rows sample the no-t model; only the second uses the regressor
    forget_rows(results, 'rows', lambda r: name == 'no_t' or r['sampler'] == SAMPLERS[1], name)
    if results.get('kid_per_step'):   # its curves sample both networks
        print(f"{name}: trained again, so the KID-per-step curves are measured again", flush=True); results['kid_per_step'] = None
    set_seed(42)
    dls = fashion_dls(bs=cfg['bs'], limit=(512, 256) if cfg['quick'] else None, seed=42, data_dir=args.data_dir)
    cbs = compile_callbacks(args.compile)
    learn = noise_level_learner(model, dls, lr=cfg['lr'], cbs=cbs) if name == 'regressor' else \
        ddpm_learner(model, dls, noisify_cosine, lr=cfg['lr'], cbs=cbs)
    synchronize(); t0 = time.perf_counter()
    learn.fit(cfg['epochs'])
    synchronize()
    train = dict(seconds=round(time.perf_counter() - t0, 1), history=learn.metrics.history, n_train=dls.train.dataset_len,
                 compile=compile_mode(args.compile))
    if name == 'regressor': train.update(regressor_mse(learn.model, dls.valid))
    save_weights(model, path, {**meta, 'train': json.dumps(train, default=str)})
    log[name] = train
    return model.eval()


@torch.no_grad()
def regressor_mse(model: nn.Module, dl, seed: int = 0) -> dict:
    "Test MSE of `model`'s logit(ᾱ) and of always predicting 0, on the same seeded noisings of every image of `dl`."
    model.eval()
    dev = next(model.parameters()).device
    g, se_model, se_zero, n = torch.Generator(dev).manual_seed(seed), torch.zeros((), device=dev), torch.zeros((), device=dev), 0
    for xb, *_ in dl:
        xt, y = noisify_noise_level(xb.to(dev), generator=g)
        se_model += ((model(xt).float().flatten() - y)**2).sum()
        se_zero += (y**2).sum()
        n += len(y)
    return dict(test_mse=round(se_model.item()/n, 4), constant_0_mse=round(se_zero.item()/n, 4),
                constant_0_mse_expected=round(math.pi**2/3, 4))


class Float32(nn.Module):
    """Run `model` in float32 inside an autocast region: the regressor's logit(ᾱ) in bfloat16 is off by up to 1/16 near
    |8|, about 3% of a small ᾱ; its test MSE (`regressor_mse`) is measured in float32 too."""
    def __init__(self, model: nn.Module): super().__init__(); self.model = model
    def forward(self, x):
        with torch.autocast(x.device.type, enabled=False): return self.model(x.float())


def sampler(no_t: nn.Module, regressor: nn.Module | None, shape: tuple, g: int, args):
    "DDIM-`args.steps` (eta 1) of `shape` from seed `g`, with the scheduled ᾱ (`regressor` None) or the regressor's; call with `callback=` or nothing."
    if regressor is None: return partial(cosine_ddim_sample, no_t, shape, args.steps, eta=1., generator=g)
    return partial(noise_level_ddim_sample, no_t, Float32(regressor), shape, args.steps, eta=1., generator=g)


def _amp(): return torch.autocast('cuda', dtype=torch.bfloat16, enabled=default_device().type == 'cuda')


def draw(no_t: nn.Module, regressor: nn.Module | None, n: int, args) -> tuple[torch.Tensor, float]:
    "`n` seeded samples (batch k: `batch_seed(seed, k)`) from DDIM with the scheduled ᾱ (`regressor` None) or the regressor's; seconds."
    out = []
    synchronize(); t0 = time.perf_counter()
    with _amp():
        for k, i in enumerate(range(0, n, args.batch)):
            x = sampler(no_t, regressor, (min(args.batch, n - i), 1, 32, 32), batch_seed(args.seed, k), args)()
            out.append(x.float().clamp(-1, 1).cpu())
    synchronize()
    return torch.cat(out), time.perf_counter() - t0


def kid_per_step(no_t: nn.Module, regressor: nn.Module, n: int, ie, args) -> dict:
    "KID of x0-hat after every step of both samplers on the first batch that `draw(..., n, args)` samples (its seed and size)."
    shape = (min(n, args.batch), 1, 32, 32)
    with _amp():
        curves = {name: kid_along_sampling(sampler(no_t, reg, shape, batch_seed(args.seed, 0), args), ie)
                  for name, reg in zip(SAMPLERS, (None, regressor))}
    return dict(n=shape[0], curves=curves)


def write(results: dict, out: Path): write_results(results, out, markdown)


def markdown(results: dict) -> str:
    ns, reals = results['config']['n'], results.get('reals')
    head = ['sampler', 'seconds'] + [h for n in ns for h in (f'FID ({n:,})', f'FID / floor ({n:,})', f'KID ({n:,})')]
    L = ["# A diffusion model without t: naive DDIM vs the noise-level regressor's ᾱ (lesson 22)\n",
         f"Command: `{results['command']}`  ", f"Environment: {results['environment']}  ",
         f"FID classifier sha256: {results.get('feature_model_sha256', '?')}  ",
         f"DDIM {results['config']['steps']} steps, eta 1; samples clamped to [-1, 1]; smaller sample counts are prefixes "
         "of the largest. FID / floor: FID over the real images' FID at the same count (an FID's scale depends on the "
         "feature network, the ratio does not). Course (2,048 samples, its own classifier): naive 22.3, with the "
         "regressor 3.88 (x0-hat clamped to +-2 on its [-0.5, 0.5] data; ours to the data range), the model with t 3.2; "
         "its reals 1.9 to 2.6.\n", '| ' + ' | '.join(head) + ' |', '|' + '---|'*len(head)]
    for r in results['rows'] + ([dict(sampler='real training images (floor)', seconds=None, scores=reals)] if reals else []):
        cells = [r['sampler'], '' if r['seconds'] is None else f"{r['seconds']:.1f}"]
        for n in ns:
            s, f = r['scores'].get(str(n)), (reals or {}).get(str(n))
            cells += [f"{s['fid']:.3f}", f"{s['fid']/f['fid']:.2f}" if f else '', f"{s['kid']:.5f}"] if s else ['', '', '']
        L.append('| ' + ' | '.join(cells) + ' |')
    reg = results['train'].get('regressor', {})
    if 'test_mse' in reg:
        L += ['', f"Regressor test MSE of logit(ᾱ): {reg['test_mse']:.4f}; always 0: {reg['constant_0_mse']:.3f} "
                  f"(expected π²/3 = {reg['constant_0_mse_expected']:.3f}); course: 0.075, its constant 0.5 measured 3.567 (π²/3 + 0.25 = 3.54)."]
    if kps := results.get('kid_per_step'):
        L += ['', f"KID of x0-hat along sampling ({kps['n']:,} images, the first batch): " + '; '.join(
            f"{k}: first {v[0]:.4f}, highest {max(v):.4f} at step {v.index(max(v)) + 1}, lowest {min(v):.4f} at step "
            f"{v.index(min(v)) + 1}, last {v[-1]:.4f} ({len(v)} steps)" for k, v in kps['curves'].items()) + '.']
    L += runs_markdown(results)
    return '\n'.join(L) + '\n'


def main(argv=None):
    args = parse_args(argv)
    if args.quick: args.n, args.batch, args.steps = [32, 16], 32, 10
    ns, out = sorted(set(args.n), reverse=True), Path(args.out)
    if min(ns) < 2: raise SystemExit('--n values must be >= 2 (FID needs a covariance)')
    cfgs = configs(args.quick, args.full_nets)
    config = dict(n=ns, batch=args.batch, steps=args.steps, seed=args.seed, nets=cfgs)
    results = dict(command=command_line(__file__, argv),
                   config=config, environment=run_environment(), train={}, rows=[], reals=None, kid_per_step=None)
    kept = resume(results, out, ('train', 'rows', 'reals', 'kid_per_step'))   # an interrupted run with the same configuration continues
    run = log_run(results, kept)
    if args.train_only:   # on a GPU, one process per compiled model (tools/gpu_stage.sh)
        for name in args.train_only: train_or_load(name, cfgs[name], args, results)
        write(results, out)
        return results
    ie = fid_evaluator(args.quick, data_dir=args.data_dir)
    results['feature_model_sha256'] = weights_hash(ie.model)   # the same feature model as results/fid_floor.json?
    if start_again_if_other_feature_network(kept, results, results['feature_model_sha256'], out, dict(rows=[], reals=None, kid_per_step=None)):
        write(results, out)   # at once: a retry after a failure continues the new table
    if results['reals'] is None:
        reals = fashion_fid_images('train', args.data_dir, n=ns[0], seed=args.seed, allow_sample=args.quick)
        results['reals'] = {str(n): ie.scores(reals[:n]) for n in ns}
        write(results, out)
    regressor = train_or_load('regressor', cfgs['regressor'], args, results)
    no_t = train_or_load('no_t', cfgs['no_t'], args, results)
    done = {r['sampler'] for r in results['rows']}
    for name, reg in zip(SAMPLERS, (None, regressor)):
        if name in done: continue
        x, secs = draw(no_t, reg, ns[0], args)
        results['rows'].append(dict(sampler=name, run=run, seconds=round(secs, 2), scores={str(n): ie.scores(x[:n]) for n in ns}))
        print(f"{name:28s} " + '  '.join(f"FID@{n} {s['fid']:.3f}" for n, s in results['rows'][-1]['scores'].items()) +
              f"  ({secs:.0f} s)", flush=True)
        write(results, out)
    if results['kid_per_step'] is None:   # last: a lease cut short keeps the FID table
        results['kid_per_step'] = kid_per_step(no_t, regressor, ns[0], ie, args)
    write(results, out)
    print(markdown(results))
    return results


if __name__ == '__main__': main()
