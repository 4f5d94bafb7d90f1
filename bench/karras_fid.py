"""FID/KID of Karras samplers at equal network evaluations (lesson 22, notebooks 10_karras and 10b_ksamplers).

The GPU measurement (one command; trains the models it needs, then writes the JSON and a Markdown table next to it):

    python bench/karras_fid.py --out results/karras_fid.json

CPU smoke test of the same code (tiny U-Nets, 1 epoch on 512 images, a tiny classifier, 32/16 samples, steps / 10),
and the same with the lesson's full-size U-Nets (`--full-nets`: what a GPU run trains, saves, loads and samples):

    python bench/karras_fid.py --quick --out /tmp/karras_fid_quick.json
    python bench/karras_fid.py --quick --full-nets --out /tmp/karras_fid_full_nets.json

What it does:
1. trains the lesson's U-Net (diffusers UNet2DModel (32, 64, 128, 256)) with Karras preconditioning
   (`karras_learner`: log-normal sigma, sigma_data 0.66 for [-1, 1] data, Adam eps 1e-5, one-cycle lr 1e-2,
   bf16, 25 epochs, EMA 0.999 tracked alongside; on CUDA the training step is compiled, `--compile`, and validation and
   sampling run eagerly), and the same U-Net with the cosine eps objective of
   notebook 08 (lr 4e-3, images in its [-0.5, 0.5]; samples doubled back to [-1, 1]) for the comparison rows (`--no-cosine` leaves them out of the table; `--models karras` or
   `--models cosine` trains and scores one of the two now, the other in a later run);
2. draws `max(--n)` seeded samples per setting (batch k uses seed `batch_seed(--seed, k)`; smaller n are prefixes, so the
   2048-sample scores use the first 2048 of the 10,000 samples) and scores them with notebook 05's evaluator
   (`fashion_image_eval`: the trained Fashion-MNIST classifier's 512-d features, the 10,000 test images as
   reference); "reals" are seeded random training images;
3. writes every row as soon as it is measured. Trained weights are kept in miniai's cache (`--weights-dir`), and
   rows already in `--out` with the same configuration are kept, so a run cut short (e.g. by a per-command time
   limit) continues where it stopped when the same command is run again.

Settings (sampler, steps -> NFE): Euler 100 (100), Euler ancestral eta 0.5 100 (100), Heun 50 (99), Heun 20 (39),
LMS 20 (20), DPM++(2M) 20 (20), DPM++(2M) 10 (10), DPM++(2M) SDE 20 (20); DPM++(2M) 20 with the EMA weights;
the cosine eps-model through `EpsDenoiser` with Euler 100 and DPM++(2M) 20, and with its own DDIM (eta 1) 100
(x0-hat clamped to its data range, as `miniai.cli.make_sampler` does).
LMS takes k-diffusion's default order 4 (the lesson's transcript: "four at a time"; its last cell ran order 3).
If the trained classifier is missing it is trained first (`train_fashion_classifier(epochs=20)`, as
`bench/train_classifier.py` does) and saved where `fashion_classifier_path()` says.
"""
from __future__ import annotations
import json, sys, time, uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing miniai
import torch
from miniai.accel import EMA, synchronize
from miniai.core import batch_seed, run_environment, cache_dir, default_device, set_seed
from miniai.data import fashion_dls
from miniai.diffusion.cosine import cosine_ddim_sample, noisify_cosine
from miniai.diffusion.ddpm import ddpm_learner, diffusers_unet, init_ddpm
from miniai.diffusion.karras import SIGMA_DATA, EpsDenoiser, KarrasDenoiser, karras_learner
from miniai.diffusion.ksamplers import sample
from miniai.cli import recipe
from miniai.fid import fashion_fid_images, fashion_image_eval, weights_hash
from bench.benchkit import count, add_models_arg, parse_bench_args, size_tag, small_nets, command_line, compile_callbacks, compile_mode, fid_bench_parser, fid_classifier_path, forget_rows, log_run, start_again_if_other_feature_network, resume, runs_markdown, write_results
from miniai.models.resnet import load_weights, save_weights, weights_metadata

KARRAS_SETTINGS = [('euler', 100, {}), ('euler_ancestral', 100, {'eta': 0.5}), ('heun', 50, {}), ('heun', 20, {}),
                   ('lms', 20, {}), ('dpmpp_2m', 20, {}), ('dpmpp_2m', 10, {}), ('dpmpp_2m_sde', 20, {})]
EMA_SETTINGS = [('dpmpp_2m', 20, {})]
COSINE_SETTINGS = [('euler', 100, {}), ('dpmpp_2m', 20, {}), ('ddim', 100, {'eta': 1.})]
COSINE_RANGE = recipe('cosine')['value_range']   # notebook 08's data range, (-0.5, 0.5), as in bench/ddpm_fid.py


def parse_args(argv=None):
    p = fid_bench_parser(__doc__, 'tiny models and classifier, few samples, steps / 10', 'U-Nets')
    p.add_argument('--epochs', type=count(), default=25)
    p.add_argument('--sigma-data', type=float, default=SIGMA_DATA)
    p.add_argument('--ema', type=float, default=0.999, help='EMA decay tracked while training (0: none)')
    p.add_argument('--no-cosine', action='store_true', help='skip the cosine eps-model comparison rows')
    p.add_argument('--precision', choices=['bf16', 'fp32'], default='bf16', help='autocast of the networks while sampling (CUDA)')
    p.add_argument('--retrain', action='store_true', help='train again even if matching weights exist')
    p.add_argument('--train-only', nargs='+', choices=('karras', 'cosine'), default=None,
                   help='train (or find) these U-Nets and stop; score them in another process')
    p.add_argument('--classifier', default=None, help='FID classifier weights (default: fashion_classifier_path())')
    add_models_arg(p, ('karras', 'cosine'))
    return parse_bench_args(p, argv)




def unet(small: bool):
    "The lesson's U-Net, or a tiny one (`small`) for the smoke test; time input scaled by 1000 (see notebook 10_karras)."
    net = diffusers_unet(t_scale=1000) if not small else diffusers_unet((16, 32), layers_per_block=1, attention=(False, False), t_scale=1000)
    return init_ddpm(net)


def train_or_load(kind: str, cfg: dict, args, results: dict):
    "Train the `kind` ('karras' or 'cosine') U-Net, or load it if weights with the same configuration exist."
    log = results['train']
    folder = Path(args.weights_dir) if args.weights_dir else cache_dir('models')
    tag = size_tag(args)
    path, ema_path = folder/f'bench_{kind}_{tag}.safetensors', folder/f'bench_{kind}_{tag}_ema.safetensors'
    meta = {'config': json.dumps(cfg, sort_keys=True)}
    model = unet(small_nets(args))
    saved = weights_metadata(path) if path.exists() else {}
    if not args.retrain and saved.get('config') == meta['config']:
        print(f"{kind}: loading {path}", flush=True)
        load_weights(model, path)
        run = saved.get('run')   # the EMA average of this very training run, never an older one
        paired = run and ema_path.exists() and weights_metadata(ema_path).get('run') == run
        ema_model = load_weights(unet(small_nets(args)), ema_path) if paired else None
        log[kind] = json.loads(saved.get('train', '{}'))
        return model.to(default_device()), (ema_model.to(default_device()) if ema_model is not None else None)
    forget_rows(results, 'rows', lambda r: r['model'] in (kind, f'{kind}+ema'), kind)   # raw and EMA rows: one training run
    ema_path.unlink(missing_ok=True)   # an older run's average must not be paired with the weights trained now
    meta['run'] = uuid.uuid4().hex     # ties the raw weights to their EMA average
    set_seed(42)
    limit = (512, 128) if args.quick else None
    dls = fashion_dls(bs=cfg['bs'], limit=limit, seed=42, data_dir=args.data_dir, value_range=tuple(cfg.get('value_range', (-1., 1.))))
    ema = EMA(args.ema) if args.ema > 0 else None
    cbs = ([ema] if ema else []) + compile_callbacks(args.compile)
    if kind == 'karras': learn = karras_learner(model, dls, sigma_data=cfg['sigma_data'], lr=cfg['lr'], cbs=cbs)
    else: learn = ddpm_learner(model, dls, noisify_cosine, lr=cfg['lr'], cbs=cbs)
    synchronize(); t0 = time.perf_counter()
    learn.fit(cfg['epochs'])
    synchronize(); secs = time.perf_counter() - t0
    train = dict(seconds=round(secs, 1), history=learn.metrics.history, n_train=dls.train.dataset_len, compile=compile_mode(args.compile))
    save_weights(model, path, {**meta, 'train': json.dumps(train, default=str)})
    ema_model = None
    if ema:
        ema_model = unet(small_nets(args)).to(default_device())
        ema.copy_to(ema_model)
        save_weights(ema_model, ema_path, meta)
    log[kind] = train
    return model.eval(), ema_model   # eager again after fit (`CompileCB`): sampling batches differ from training's


def draw(denoiser_or_model, sampler: str, steps: int, kw: dict, n: int, args,
         hi: float = 1.) -> tuple[torch.Tensor, int, float]:   # hi: the model's data range is [-hi, hi]
    "`n` seeded samples in batches (batch k: `batch_seed(seed, k)`), rescaled from [-hi, hi] and clamped to [-1, 1], on the CPU; also NFE per image and seconds."
    dev = default_device()
    amp = torch.autocast('cuda', dtype=torch.bfloat16, enabled=dev.type == 'cuda' and args.precision == 'bf16')
    out, nfe = [], 0
    synchronize(); t0 = time.perf_counter()
    with amp:
        for k, i in enumerate(range(0, n, args.batch)):
            shape = (min(args.batch, n - i), 1, 32, 32)
            if sampler == 'ddim':   # the cosine model's own sampler (notebook 08)
                g = torch.Generator(dev).manual_seed(batch_seed(args.seed, k))
                x, nfe = cosine_ddim_sample(denoiser_or_model, shape, steps, generator=g, clamp=hi, **kw), steps - 1   # the grid ends at t=0: no call there
            else:
                x, nfe = sample(sampler, denoiser_or_model, shape, steps=steps, seed=batch_seed(args.seed, k), device=dev, **kw)
            out.append((x.float()/hi).clamp(-1, 1).cpu())
    synchronize()
    return torch.cat(out), nfe, time.perf_counter() - t0


def write(results: dict, out: Path): write_results(results, out, markdown)


def markdown(results: dict) -> str:
    ns = results['config']['n']
    head = ['model', 'sampler', 'steps', 'NFE'] + [h for n in ns for h in (f'FID ({n:,})', f'FID / floor ({n:,})', f'KID ({n:,})')] + ['seconds']
    reals = next((r for r in results['rows'] if r['model'] == 'reals'), None)
    ratio = lambda r, n: f"{r['scores'][str(n)]['fid']/reals['scores'][str(n)]['fid']:.2f}" if reals else ''
    lines = ["# Karras samplers: FID/KID at equal network evaluations\n",
             f"Command: `{results['command']}`  ", f"Environment: {results['environment']}  ",
             f"FID classifier: {results.get('classifier', '?')}  ",
             "Samples clamped to [-1, 1] (the `cosine` model's, trained on [-0.5, 0.5] as in notebook 08, doubled first); "
             "smaller sample counts are prefixes of the largest. "
             "Rows `karras` and `cosine` sample the raw weights, `karras+ema` the same run's EMA average. "
             "Seconds: time to draw the largest sample set. FID / floor: FID over the reals' FID at the same count "
             "(an FID's scale depends on the feature network, the ratio does not; the course's Karras samplers: about 2 "
             "over its reals' 2.6).\n",
             '| ' + ' | '.join(head) + ' |', '|' + '---|'*len(head)]
    for r in results['rows']:
        cells = [r['model'], r['sampler'] + (f" {r['kwargs']}" if r['kwargs'] else ''), str(r['steps']), str(r['nfe'])]
        cells += [v for n in ns for v in (f"{r['scores'][str(n)]['fid']:.3f}", ratio(r, n), f"{r['scores'][str(n)]['kid']:.5f}")]
        cells.append(f"{r['seconds']:.1f}")
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += runs_markdown(results)
    return '\n'.join(lines) + '\n'


def main(argv=None):
    args = parse_args(argv)
    if args.quick: args.n, args.batch, args.epochs = [32, 16], 32, 1
    ns = sorted(set(args.n), reverse=True)
    if min(ns) < 2: raise SystemExit('--n values must be >= 2 (FID needs a covariance)')
    steps_of = (lambda s: max(1, s//10)) if args.quick else (lambda s: s)
    out = Path(args.out)
    kcfg = dict(objective='karras', epochs=args.epochs, lr=1e-2 if not args.quick else 3e-3, bs=512 if not args.quick else 64,
                sigma_data=args.sigma_data, ema=args.ema, quick=args.quick)   # (the compile mode is not part of a model's identity)
    if args.full_nets: kcfg['full_nets'] = True
    ccfg = dict(kcfg, objective='cosine', lr=4e-3 if not args.quick else 3e-3, sigma_data=None, value_range=list(COSINE_RANGE))
    config = dict(n=ns, batch=args.batch, seed=args.seed, precision=args.precision, karras=kcfg,
                  cosine=None if args.no_cosine else ccfg)
    results = dict(command=command_line(__file__, argv),
                   config=config, environment=run_environment(), train={}, rows=[])
    kept = resume(results, out, ('rows', 'train'))   # an interrupted run with the same configuration continues
    done = lambda: {(r['model'], r['sampler'], r['steps'], json.dumps(r['kwargs'], sort_keys=True)) for r in results['rows']}   # (training again forgets rows)
    run_ix = log_run(results, kept)

    if args.train_only:   # on a GPU, one process per compiled model (tools/gpu_stage.sh)
        for kind in args.train_only: train_or_load(kind, kcfg if kind == 'karras' else ccfg, args, results)
        write(results, out)
        return results
    clf = fid_classifier_path(args)
    results['classifier'] = {'path': str(clf), **{k: v for k, v in weights_metadata(clf).items() if k != 'fashion_classifier'}}
    ie = fashion_image_eval(clf, data_dir=args.data_dir, n_ref=500 if args.quick else None, cache=not args.quick,
                            allow_sample=args.quick)
    results['classifier']['weights_sha256'] = weights_hash(ie.model)   # the same feature model as results/fid_floor.json?
    if start_again_if_other_feature_network(kept, results, results['classifier']['weights_sha256'], out, dict(rows=[])):
        write(results, out)   # at once: a retry after a failure continues the new table

    def run(model_name, denoiser, settings, hi=1.):
        for sampler, steps, kw in settings:
            steps = steps_of(steps)
            key = (model_name, sampler, steps, json.dumps(kw, sort_keys=True))
            if key in done(): continue
            x, nfe, secs = draw(denoiser, sampler, steps, kw, ns[0], args, hi)
            scores = {str(n): ie.scores(x[:n]) for n in ns}
            results['rows'].append(dict(model=model_name, sampler=sampler, steps=steps, kwargs=kw, nfe=nfe, run=run_ix,
                                        scores=scores, seconds=round(secs, 2)))
            print(f"{model_name:12s} {sampler:16s} {steps:4d} steps {nfe:4d} NFE  " +
                  '  '.join(f"FID@{n} {s['fid']:.3f}" for n, s in scores.items()) + f"  ({secs:.0f} s)", flush=True)
            write(results, out)

    if ('reals', 'train images', 0, '{}') not in done():
        reals = fashion_fid_images('train', args.data_dir, n=ns[0], seed=args.seed, allow_sample=args.quick)
        results['rows'].append(dict(model='reals', sampler='train images', steps=0, kwargs={}, nfe=0, run=run_ix,
                                    scores={str(n): ie.scores(reals[:n]) for n in ns}, seconds=0.))
        write(results, out)
    if 'karras' in args.models:
        karras, karras_ema = train_or_load('karras', kcfg, args, results)
        run('karras', KarrasDenoiser(karras, args.sigma_data), KARRAS_SETTINGS)
        if karras_ema is not None: run('karras+ema', KarrasDenoiser(karras_ema, args.sigma_data), EMA_SETTINGS)
        del karras, karras_ema
    if not args.no_cosine and 'cosine' in args.models:
        cosine, _ = train_or_load('cosine', ccfg, args, results)
        for sampler, steps, kw in COSINE_SETTINGS:
            run('cosine', cosine if sampler == 'ddim' else EpsDenoiser(cosine), [(sampler, steps, kw)], hi=COSINE_RANGE[1])
    write(results, out)
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == '__main__': main()
