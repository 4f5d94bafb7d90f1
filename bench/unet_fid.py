"""Our UNet against diffusers', and class-conditional sampling with guidance (lesson 24: notebooks 11-13).

The GPU measurement (one command; it trains the models it needs, then writes the JSON and a Markdown table next
to it; a run cut short, e.g. by a per-command time limit, continues where it stopped when run again):

    python bench/unet_fid.py --out results/unet_fid.json

CPU smoke test of the same code (toy UNets, 1 epoch on 256 images, a tiny classifier (trained once, cached), 20/10 samples,
4 sampling steps; the figures are meaningless):

    python bench/unet_fid.py --quick --out /tmp/unet_fid_quick.json

and the same with the full-size networks (`--full-nets`: what a GPU run trains, saves, loads and samples):

    python bench/unet_fid.py --quick --full-nets --out /tmp/unet_fid_full_nets.json

What it measures:
1. Unconditional (section "models"): the same Karras objective and recipe (`karras_learner`: log-normal sigma,
   Adam eps 1e-5, one-cycle lr 1e-2, bf16 and a compiled training step on a GPU (`--compile`; validation and sampling eager), batch 512, 25 epochs) for
   - `emb_unet`: `EmbUNetModel(1, 1, (32, 64, 128, 256), 2, attn_chans=0)` (notebook 11, no attention),
   - `emb_unet_attn`: the same with `attn_chans=8, attn_start=1` (notebook 12),
   - `diffusers`: diffusers `UNet2DModel` (32, 64, 128, 256) built as in notebook 10 (`diffusers_unet(t_scale=1000)`,
     `init_ddpm`; GroupNorm(8), attention from the second level and in the middle block).
   The objective is the same; the time input each network sees is the one it is built for: diffusers' sinusoidal
   embedding, designed for step numbers 0..999, gets 1000 c_noise (notebook 10), ours c_noise itself (its embedding
   MLP starts with a BatchNorm that rescales each frequency; notebook 11). So the comparison is of the two networks
   as each is meant to be fed, not of one input through two networks.
   (The lesson itself trained its attention and conditional UNets on the cosine schedule and sampled them with DDIM
   (notebook 28: loss 0.032, FID 4.06 at DDIM-100). Here all three networks share the Karras objective and sampler so
   that they compare like with like; our losses and FIDs are therefore not comparable with those two course figures.)
   Each is sampled with the same sampler (LMS of order 3, 20 steps: the lesson's choice) from the same seeds: `max(--n)`
   samples (batch k uses seed `batch_seed(--seed, k)`); smaller n are prefixes, so the 2,048-sample FID uses the first 2,048
   of the 10,000. Reported: parameters, final train/valid loss, training images/s (training phases of epochs
   2..N, timed with device synchronisation at epoch boundaries only), sampling images/s (10,000 images, bf16
   autocast on a GPU), FID and KID.
2. Conditional (section "guidance"): `EmbUNetModel(..., n_classes=10)` without attention, trained the same way with
   10% of the labels dropped to the null class (`DropLabelCB`); per guidance scale w in (0, 1, 2, 3)
   (`GuidedModel`: uncond + w * (cond - uncond)) samples of labels `i % 10`: the notebook-04 classifier's accuracy
   on them (overall and per class, on all `max(--n)` samples) and FID/KID on 10,000 and 2,048.
3. Reals: FID/KID of as many seeded random training images, the floor.

FID/KID use notebook 05's evaluator (`fashion_image_eval`: the trained Fashion-MNIST classifier's 512-d features, the
10,000 test images as reference). If the classifier is missing it is trained first (20 epochs) and saved where
`fashion_classifier_path()` says. Trained UNets are kept in miniai's cache (`--weights-dir`) with their configuration.
"""
from __future__ import annotations
import hashlib, json, sys, time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing miniai
import torch
import torch.nn.functional as F
from bench.benchkit import count, add_models_arg, parse_bench_args, size_tag, small_nets, command_line, compile_callbacks, compile_mode, fid_bench_parser, fid_classifier_path, forget_rows, log_run, start_again_if_other_feature_network, resume, runs_markdown, write_results
from miniai.accel import CheckpointCB, MixedPrecision, synchronize
from miniai.core import batch_seed, run_environment, cache_dir, default_device, set_seed
from miniai.data import fashion_dls, fashion_mnist_arrays, FASHION_CLASSES
from miniai.learner import Callback, Learner, MetricsCB, OneCycleCB, TrainCB, batch_size
from miniai.diffusion.ddpm import diffusers_unet, init_ddpm
from miniai.diffusion.karras import noisify_karras, karras_learner
from miniai.diffusion.ksamplers import sample
from miniai.diffusion.guidance import GuidedModel, DropLabelCB, CondNoisifyCB, label_accuracy
from miniai.fid import ImageEval, fashion_fid_images, fashion_image_eval, weights_hash
from miniai.models.resnet import classifier_features, load_fashion_classifier, load_weights, save_weights, weights_metadata
from miniai.models.unet import EmbUNetModel, n_params

SCALES = (0., 1., 2., 3.)


def parse_args(argv=None):
    p = fid_bench_parser(__doc__, 'toy models and classifier, few samples and steps', 'UNets')
    p.add_argument('--epochs', type=count(), default=25)
    p.add_argument('--sampler', default='lms', help='k-diffusion-style sampler of miniai.diffusion.ksamplers')
    p.add_argument('--steps', type=count(), default=20, help='sampling steps')
    p.add_argument('--lms-order', type=int, choices=(1, 2, 3, 4), default=3,
                   help="LMS's order (default: %(default)s, the lesson's `sample_lms(model, steps=20, order=3)` behind its FIDs)")
    p.add_argument('--p-uncond', type=float, default=0.1, help='label drop probability of the conditional model')
    p.add_argument('--retrain', action='store_true', help='train again even if matching weights exist')
    p.add_argument('--train-only', nargs='+', choices=MODELS + ('cond',), default=None,
                   help='train (or find) these networks and stop; score them in another process')
    p.add_argument('--classifier', default=None, help='FID classifier weights (default: fashion_classifier_path())')
    add_models_arg(p, MODELS + ('cond',))   # `--models cond`: the guidance section alone
    return parse_bench_args(p, argv)




# ---- models ----------------------------------------------------------------------------------------------

MODELS = ('emb_unet', 'emb_unet_attn', 'diffusers')   # the unconditional networks compared

def build(name: str, small: bool):
    "A fresh network for `name` (toy sizes with `small`)."
    nfs, nl = ((8, 16), 1) if small else ((32, 64, 128, 256), 2)
    if name == 'emb_unet': return EmbUNetModel(1, 1, nfs, nl, attn_chans=0)
    if name == 'emb_unet_attn': return EmbUNetModel(1, 1, nfs, nl, attn_chans=8, attn_start=1)
    if name == 'cond': return EmbUNetModel(1, 1, nfs, nl, attn_chans=0, n_classes=10)
    if name == 'diffusers':
        net = diffusers_unet((8, 16), layers_per_block=1, norm_groups=4, t_scale=1000) if small else diffusers_unet(t_scale=1000)
        return init_ddpm(net)
    raise ValueError(name)


class TrainTimer(Callback):
    "Seconds and images of each training phase (device synchronised at phase boundaries only)."
    order = 1000
    def before_fit(self, learn): self.epochs, self.resumed = [], learn.start_epoch > 0   # CheckpointCB (order 80) ran
    def before_epoch(self, learn):
        if learn.training: synchronize(); self.t0, self.n = time.perf_counter(), 0
    def after_batch(self, learn):
        if learn.training: self.n += batch_size(learn.batch)
    def after_epoch(self, learn):
        if learn.training: synchronize(); self.epochs.append((time.perf_counter() - self.t0, self.n))

    def images_per_s(self) -> float | None:
        timed = self.epochs[1:] or self.epochs   # the first epoch includes warm-up
        return sum(n for _, n in timed) / sum(s for s, _ in timed) if timed else None


def cond_learner(model, dls, lr: float, p_uncond: float, cbs=()) -> Learner:
    "`karras_learner`'s recipe for a class-conditional model: labels kept (and dropped with `p_uncond`), `n_inp=3`."
    dev = default_device()
    cbs = [DropLabelCB(p_uncond, model.n_classes), CondNoisifyCB(noisify_karras), TrainCB(n_inp=3), OneCycleCB(lr),
           MetricsCB(), *cbs]
    if dev.type == 'cuda': cbs.append(MixedPrecision(torch.bfloat16))
    return Learner(model.to(dev), dls, F.mse_loss, lr=lr, cbs=cbs, n_inp=3,
                   opt_func=partial(torch.optim.Adam, eps=1e-5, fused=dev.type == 'cuda'))


def train_or_load(name: str, cfg: dict, args, results: dict):
    "Train network `name`, or load it if weights with the same configuration exist."
    log = results['train']
    folder = Path(args.weights_dir) if args.weights_dir else cache_dir('models')
    path = folder/f"bench_unet_{name}_{size_tag(args)}.safetensors"
    meta = {'config': json.dumps({**cfg, 'model': name}, sort_keys=True)}
    model = build(name, small_nets(args))
    if not args.retrain and path.exists() and weights_metadata(path).get('config') == meta['config']:
        print(f"{name}: loading {path}", flush=True)
        log[name] = json.loads(weights_metadata(path).get('train', '{}'))
        return load_weights(model, path).to(default_device()).eval()
    print(f"{name}: training ({n_params(model):,} parameters)", flush=True)
    if name == 'cond': forget_rows(results, 'guidance', lambda r: True, name)   # every guidance scale from one training run
    else: forget_rows(results, 'rows', lambda r: r['model'] == name, name)
    ckpt = path.with_name(f"{path.stem}_{hashlib.sha256(meta['config'].encode()).hexdigest()[:10]}.ckpt")
    if args.retrain: ckpt.unlink(missing_ok=True)
    set_seed(42)
    dls = fashion_dls(bs=cfg['bs'], limit=(256, 64) if args.quick else None, seed=42, data_dir=args.data_dir)
    dls.train.drop_last = True   # as CompileCB does: the eager retry of a failed compiled run (gpu_stage.sh) resumes its
    # checkpoint, whose one-cycle schedule counts full batches only (CheckpointCB refuses another count)
    timer, cbs = TrainTimer(), [CheckpointCB(ckpt), *compile_callbacks(args.compile)]   # a run cut short resumes from its last finished epoch
    if name == 'cond': learn = cond_learner(model, dls, cfg['lr'], cfg['p_uncond'], cbs=[timer, *cbs])
    else: learn = karras_learner(model, dls, lr=cfg['lr'], cbs=[timer, *cbs])
    synchronize(); t0 = time.perf_counter()
    learn.fit(cfg['epochs'])
    synchronize()
    train = dict(params=n_params(model), seconds=round(time.perf_counter() - t0, 1), train_images_per_s=timer.images_per_s(),
                 history=learn.metrics.history, n_train=dls.train.dataset_len, compile=compile_mode(args.compile),
                 note='seconds and history cover only this run (it resumed from a checkpoint)' if timer.resumed else '')
    save_weights(model, path, {**meta, 'train': json.dumps(train, default=str)})
    ckpt.unlink(missing_ok=True)
    log[name] = train
    return model.eval()   # eager again after fit (`CompileCB`): sampling batches differ from training's


# ---- sampling and scoring --------------------------------------------------------------------------------

def sampler_kwargs(args) -> dict:
    "The sampler's own options: LMS's order."
    return {'order': args.lms_order} if args.sampler == 'lms' else {}


def draw(model, n: int, args, labels: torch.Tensor | None = None, scale: float = 1.) -> tuple[torch.Tensor, float]:
    "`n` seeded samples (batch k: `batch_seed(seed, k)`) in [-1, 1] on the CPU, of classes `labels` with guidance `scale` if given."
    dev = default_device()
    amp = torch.autocast('cuda', dtype=torch.bfloat16, enabled=dev.type == 'cuda')
    out = []
    synchronize(); t0 = time.perf_counter()
    with amp:
        for k, i in enumerate(range(0, n, args.batch)):
            m = min(args.batch, n - i)
            net = model if labels is None else GuidedModel(model, labels[i:i+m], scale)
            x = sample(args.sampler, net, (m, 1, 32, 32), steps=args.steps, seed=batch_seed(args.seed, k), device=dev, **sampler_kwargs(args)).x
            out.append(x.float().clamp(-1, 1).cpu())
    synchronize()
    return torch.cat(out), time.perf_counter() - t0


def scores(ie: ImageEval, imgs: torch.Tensor, ns: list[int]) -> dict:
    "FID and KID of the first n images, for each n in `ns`."
    return {str(n): {k: v for k, v in ie.scores(imgs[:n]).items() if k != 'n'} for n in ns}


def accuracy(clf, imgs: torch.Tensor, labels: torch.Tensor) -> dict:
    "The classifier's accuracy on generated `imgs` of requested classes `labels`: overall and per class."
    a = label_accuracy(clf, imgs, labels, bs=1024)
    return dict(overall=a['accuracy'], per_class=dict(zip(FASHION_CLASSES, a['per_class'])))


def classifier(args):
    "The FID classifier (eval mode) and a description (`fid_classifier_path`: trained if missing)."
    path = fid_classifier_path(args)
    meta = {k: v for k, v in weights_metadata(path).items() if k != 'fashion_classifier'}
    return load_fashion_classifier(path), {'path': str(path), **meta}


# ---- results ---------------------------------------------------------------------------------------------

def write(results: dict, out: Path): write_results(results, out, markdown)


def _fk(r, n, reals=None):
    "Table cells of row `r` at sample count `n`: FID and KID, with FID / the reals' FID between them if `reals` is given."
    s, f = r['scores'].get(str(n)), (reals or {}).get('scores', {}).get(str(n))
    fid, kid = (f"{s['fid']:.3f}", f"{s['kid']:.5f}") if s else ('', '')
    if reals is None: return fid, kid
    return fid, (f"{s['fid']/f['fid']:.2f}" if s and f else ''), kid

def markdown(results: dict) -> str:
    ns, cfg = results['config']['n'], results['config']
    lines = ["# Our UNet vs diffusers' UNet2DModel, and classifier-free guidance (lesson 24)\n",
             f"Command: `{results['command']}`  ", f"Environment: {results['environment']}  ",
             f"FID classifier: {results.get('classifier', '?')}  ",
             f"Sampler: {cfg['sampler']}{''.join(f' {k} {v}' for k, v in cfg.get('sampler_kwargs', {}).items())}, {cfg['steps']} steps; samples clamped to [-1, 1]; smaller sample counts are "
             "prefixes of the largest; sampling images/s over the largest set. FID / floor: FID over the real training "
             "images' FID at the same count (an FID's scale depends on the feature network, the ratio does not). "
             "The course (2,048 unseeded samples, its own classifier; its reals 1.9 to 2.6): EmbUNet without attention "
             "4.61 to 6.20 (LMS 20, order 3, three runs); with attention 4.06 to 5.32, but from a cosine eps-model sampled "
             "with DDIM 100, another objective than the Karras one of every row here; no guidance FIDs. Issue 6's target: "
             "95% class accuracy with guidance.\n"]
    if results['rows']:
        head = ['model', 'params', 'train loss', 'valid loss', 'train img/s', 'sample img/s'] + \
               [h for n in ns for h in (f'FID ({n:,})', f'FID / floor ({n:,})', f'KID ({n:,})')]
        lines += ['## Unconditional models\n', '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
        for r in results['rows']:
            t = results['train'].get(r['model'], {})
            hist = t.get('history') or [{}]
            tr = next((h.get('loss') for h in reversed(hist) if h.get('phase') == 'train'), None)
            va = next((h.get('loss') for h in reversed(hist) if h.get('phase') != 'train'), None)
            f = lambda v, p: '' if v is None else f"{v:{p}}"
            cells = [r['model'], f(t.get('params'), ','), f(tr, '.4f'), f(va, '.4f'), f(t.get('train_images_per_s'), ',.0f'),
                     f(r.get('sample_images_per_s'), ',.0f')] + [v for n in ns for v in _fk(r, n, results['reals'] or {})]
            lines.append('| ' + ' | '.join(cells) + ' |')
    if results['guidance']:
        head = ['guidance scale', 'accuracy'] + [h for n in ns for h in (f'FID ({n:,})', f'FID / floor ({n:,})', f'KID ({n:,})')] + \
               [c.split(' ')[0] for c in FASHION_CLASSES]
        lines += ['\n## Class-conditional model, classifier-free guidance\n',
                  f"Accuracy: the FID classifier's accuracy on all {max(ns):,} samples (labels i % 10; '-': a class with no sample).\n",
                  '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
        for r in results['guidance']:
            cells = [f"{r['scale']:g}", f"{r['accuracy']['overall']:.2%}"] + [v for n in ns for v in _fk(r, n, results['reals'] or {})] + \
                    ['-' if a is None else f"{a:.0%}" for a in r['accuracy']['per_class'].values()]   # None: class never drawn
            lines.append('| ' + ' | '.join(cells) + ' |')
    if results['reals']:
        lines += ['\n## Real training images (the floor)\n', '| ' + ' | '.join(h for n in ns for h in (f'FID ({n:,})', f'KID ({n:,})')) + ' |',
                  '|' + '---|' * (2 * len(ns)), '| ' + ' | '.join(v for n in ns for v in _fk(results['reals'], n)) + ' |']
    lines += runs_markdown(results)
    return '\n'.join(lines) + '\n'


def main(argv=None):
    args = parse_args(argv)
    if args.quick: args.n, args.batch, args.epochs, args.steps = [20, 10], 20, 1, 4
    ns = sorted(set(args.n), reverse=True)
    if min(ns) < 2: raise SystemExit('--n values must be >= 2 (FID needs a covariance)')
    out = Path(args.out)
    tcfg = dict(epochs=args.epochs, lr=3e-3 if args.quick else 1e-2, bs=32 if args.quick else 512, quick=args.quick)
    if args.full_nets: tcfg['full_nets'] = True
    config = dict(n=ns, batch=args.batch, seed=args.seed, sampler=args.sampler, sampler_kwargs=sampler_kwargs(args), steps=args.steps, train=tcfg,
                  p_uncond=args.p_uncond, scales=list(SCALES))
    results = dict(command=command_line(__file__, argv),
                   config=config, environment=run_environment(), train={}, rows=[], guidance=[], reals=None)
    kept = resume(results, out, ('train', 'rows', 'guidance', 'reals'))   # an interrupted run with the same configuration continues

    ccfg = {**tcfg, 'p_uncond': args.p_uncond}   # the class-conditional model's
    run = log_run(results, kept)
    if args.train_only:   # on a GPU, one process per compiled model (tools/gpu_stage.sh)
        for name in args.train_only: train_or_load(name, ccfg if name == 'cond' else tcfg, args, results)
        write(results, out)
        return results
    clf, results['classifier'] = classifier(args)
    ie = ImageEval(classifier_features(clf), fashion_fid_images('test', args.data_dir, n=500, allow_sample=True), bs=512) if args.quick else \
         fashion_image_eval(results['classifier']['path'], data_dir=args.data_dir, allow_sample=False)
    results['classifier']['weights_sha256'] = weights_hash(ie.model)   # the same feature model as results/fid_floor.json?
    if start_again_if_other_feature_network(kept, results, results['classifier']['weights_sha256'], out, dict(rows=[], guidance=[], reals=None)):
        write(results, out)   # at once: a retry after a failure continues the new table
    n = max(ns)

    if results['reals'] is None:
        x, _ = fashion_mnist_arrays('train', args.data_dir, allow_sample=args.quick)
        reals = fashion_fid_images('train', args.data_dir, n=min(n, len(x)), seed=args.seed, allow_sample=args.quick)
        results['reals'] = {'scores': scores(ie, reals, [m for m in ns if m <= len(reals)])}
        write(results, out)

    if set(MODELS) & set(args.models):
        done = {r['model'] for r in results['rows']}
        for name in MODELS:
            if name in done or name not in args.models: continue
            model = train_or_load(name, tcfg, args, results)
            imgs, secs = draw(model, n, args)
            results['rows'].append(dict(model=name, run=run, sample_seconds=round(secs, 1), sample_images_per_s=n / secs,
                                        scores=scores(ie, imgs, ns)))
            write(results, out)
            print(markdown(results).split('## Class')[0], flush=True)

    if 'cond' in args.models:
        done = {r['scale'] for r in results['guidance']}
        if any(w not in done for w in SCALES):
            model = train_or_load('cond', ccfg, args, results)
            done = {r['scale'] for r in results['guidance']}   # none if it was trained again (`forget_rows`)
            labels = torch.arange(n) % 10
            for w in SCALES:
                if w in done: continue
                imgs, secs = draw(model, n, args, labels, w)
                results['guidance'].append(dict(scale=w, run=run, sample_seconds=round(secs, 1), sample_images_per_s=n / secs,
                                                accuracy=accuracy(clf, imgs, labels), scores=scores(ie, imgs, ns)))
                write(results, out)
    print(markdown(results))
    print(f"written: {out} and {out.with_suffix('.md')}")


if __name__ == '__main__':
    main()
