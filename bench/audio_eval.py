"""Audio diffusion on spoken digits (notebooks 16, 17, 17b) at full size: one command, one JSON results file.

The GPU measurement (not timed yet; its two trainings are about 14 PFLOPs; tools/gpu_stage.sh adds `--train-minutes 8`,
which times the network first and trains fewer epochs if the configured ones would not fit; docs/gpu_runbook.md):

    python bench/audio_eval.py --out results/audio.json

CPU smoke test of the same code (notebook 17b's quick-mode sizes, a minute or two):

    python bench/audio_eval.py --quick --out /tmp/audio.json
    python bench/audio_eval.py --quick --full-nets --out /tmp/audio_full_nets.json   # the full-size networks, quick data

The FSDD is read from --data-dir or $MINIAI_DATA (fsdd/fsdd_v1.0.10.npz). The JSON holds:
- `round_trip`: spectral convergence and log-spectral distance (dB) of spectrogram -> Griffin-Lim on the test clips,
  for 1, 8, 32 and 64 Griffin-Lim iterations (notebook 16's table);
- `classifier`: the digit classifier's test accuracy (300 test clips), its training time;
- `diffusion`: per model (unconditional, conditional) the parameter count, final train/eval losses, training time;
- `scores`: per set of clips (real training clips = the floors, unconditional samples, conditional samples per guidance
  scale) the FID against the test clips on the classifier's features, as generated and as heard (after Griffin-Lim),
  and for the real and conditional sets the accuracy of the classifier on the intended digits, overall (as generated
  and as heard) and per digit (as heard);
- `config`, `environment`, and the total wall time.
With --wavs DIR, a few generated clips per digit are also written as WAV files.
"""
from __future__ import annotations
import argparse, json, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing miniai
import torch
from bench.benchkit import add_full_nets_arg, count, command_line, parse_bench_args, positive, seconds_per_image, write_json
from miniai.accel import EMA, synchronize
from miniai.core import run_environment, default_device, set_seed
from miniai.audio import DIGITS, MelSpec, fix_length, fsdd_dls, load_fsdd, round_trip_quality, write_wav
from miniai.audio_diffusion import (AUDIO_CONFIG, AUDIO_QUICK_CONFIG, all_items, diffusion_learner, evaluate_generation,
                                    generate_spectrograms, scores_table, simple_diffusion, train_audio_diffusion,
                                    train_digit_classifier)


NET_KEYS = ('clf_nfs', 'nfs', 'num_layers', 'n_mids', 'mid_attn_chans', 'ema')   # what `--quick --full-nets` takes from AUDIO_CONFIG (the EMA too)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', required=True, help='JSON results file')
    p.add_argument('--quick', action='store_true', help="notebook 17b's quick-mode sizes (CPU smoke test)")
    p.add_argument('--data-dir', default=None, help='folder with fsdd/fsdd_v1.0.10.npz (default: $MINIAI_DATA)')
    p.add_argument('--epochs', type=count(), default=None, help='override the diffusion epochs of the config')
    p.add_argument('--wavs', default=None, help='also write 3 generated clips per digit (w = last guidance scale) here')
    p.add_argument('--seed', type=int, default=42)
    p.add_argument('--train-minutes', type=positive, default=None,
                   help='fit the two diffusion trainings into this many minutes: time the network for a few batches first and '
                        'train fewer epochs if the configured ones would take longer (recorded under time_budget)')
    add_full_nets_arg(p)
    return parse_bench_args(p, argv)


def audio_seconds_per_image(dls, sigma_data: float, cfg: dict) -> float:
    """Training seconds per spectrogram of `cfg`'s conditional U-Net (with its EMA), timed on a throwaway copy; the training
    loader's shuffle state and the RNG are put back, so the runs that follow are those of a run without the timing."""
    saved = dls.train.state_dict()
    try:
        return seconds_per_image(lambda: diffusion_learner(simple_diffusion(cfg, 10), dls, sigma_data, lr=cfg['lr'], p_uncond=cfg['p_uncond'],
                                                           cbs=[EMA(cfg['ema'])] if cfg.get('ema') else [], progress=False), cfg['bs'])
    finally: dls.train.load_state_dict(saved)


def plan_audio_epochs(cfg: dict, n_train: int, n_test: int, rate: float, budget_s: float) -> dict:
    """Epochs of each of the two diffusion trainings (unconditional, conditional) that fit `budget_s` seconds at `rate`
    seconds per image: `cfg`'s own, or fewer. Each epoch also validates on `n_test` clips (a third of a training step each)."""
    per_epoch = 2*(n_train + n_test/3)*rate
    epochs = max(1, min(cfg['epochs'], int(budget_s/per_epoch)))
    return dict(budget_s=budget_s, seconds_per_image=rate, planned=dict(epochs=cfg['epochs'], train_s=cfg['epochs']*per_epoch),
                epochs=epochs, estimated_train_s=epochs*per_epoch)


def timed(fn, *args, **kwargs):
    "Run `fn`, return (result, seconds), synchronising the device before and after."
    synchronize(default_device()); t0 = time.perf_counter()
    res = fn(*args, **kwargs)
    synchronize(default_device())
    return res, time.perf_counter() - t0


def last_losses(learn) -> dict:
    "The final epoch's train and eval loss from the MetricsCB history."
    h = learn.metrics.history
    return {ph: next((r['loss'] for r in reversed(h) if r['phase'] == ph), None) for ph in ('train', 'eval')}


def main(argv=None):
    args = parse_args(argv)
    cfg = dict(AUDIO_QUICK_CONFIG if args.quick else AUDIO_CONFIG)
    if args.full_nets: cfg.update({k: AUDIO_CONFIG[k] for k in NET_KEYS})
    if args.epochs is not None: cfg['epochs'] = args.epochs
    t_start, out = time.perf_counter(), dict(command=command_line(__file__, argv), seed=args.seed, quick=args.quick, full_nets=args.full_nets, environment=run_environment(),
                                             config={k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()})
    spec = MelSpec()
    set_seed(args.seed)

    # the representation: round trip of the test clips
    test_waves = fix_length(load_fsdd('test', args.data_dir, allow_sample=args.quick).waves, spec.n_samples, warn=False)
    if args.quick: test_waves = test_waves[:40]
    waves = test_waves.to(default_device())
    out['round_trip'] = {f'{it} GL iterations': round_trip_quality(spec, waves, n_iter=it) for it in (1, 8, 32, 64)}
    out['round_trip']['n_clips'] = len(test_waves)
    print('round trip:', json.dumps(out['round_trip']), flush=True)
    write_json(out, args.out)   # after every phase (atomically): a lease cut short still returns what finished

    dls = fsdd_dls(bs=cfg['bs'], spec=spec, data_dir=args.data_dir, limit=cfg['limit'], seed=args.seed,
                   allow_sample=args.quick)
    sigma_data = all_items(dls.train)[0].std().item()
    out['sigma_data'] = sigma_data

    (clf, acc), secs = timed(train_digit_classifier, dls, cfg['clf_epochs'], cfg['clf_lr'], cfg['clf_nfs'])
    out['classifier'] = dict(test_accuracy=acc, n_test=dls.valid.dataset_len, train_seconds=secs)
    print(f"classifier: test accuracy {acc:.4f} ({secs:.0f} s)", flush=True)
    write_json(out, args.out)

    if args.train_minutes is not None:
        rate, secs = timed(audio_seconds_per_image, dls, sigma_data, cfg)
        plan = plan_audio_epochs(cfg, dls.train.dataset_len, dls.valid.dataset_len, rate, 60*args.train_minutes)
        cfg['epochs'] = plan['epochs']
        out['time_budget'], out['config']['epochs'] = dict(plan, probe_s=secs), cfg['epochs']
        print(f"time budget: {args.train_minutes} min for both trainings; the configured {plan['planned']['epochs']} epochs "
              f"would take {plan['planned']['train_s']:.0f} s, so {cfg['epochs']} epochs (estimate {plan['estimated_train_s']:.0f} s)", flush=True)
        write_json(out, args.out)

    out['diffusion'], models = {}, {}
    for name, n_classes in (('unconditional', None), ('conditional', 10)):
        (model, learn), secs = timed(train_audio_diffusion, dls, sigma_data, n_classes, cfg, args.seed)
        models[name] = model
        out['diffusion'][name] = dict(params=sum(p.numel() for p in model.parameters()), epochs=cfg['epochs'],
                                      train_seconds=secs, images_per_s=cfg['epochs']*dls.train.dataset_len/secs,
                                      **{f'final_{k}_loss': v for k, v in last_losses(learn).items()})
        print(f"{name}: {json.dumps(out['diffusion'][name])}", flush=True)
        write_json(out, args.out)

    scores, secs = timed(evaluate_generation, clf, models['unconditional'], models['conditional'], dls, sigma_data, cfg, spec,
                         seed=args.seed)   # the floor clips, the sampling noise and the Griffin-Lim phases
    out['scores'], out['eval_seconds'] = scores, secs
    print(scores_table(scores, acc), flush=True)
    write_json(out, args.out)

    if args.wavs:
        digits = torch.arange(10).repeat_interleave(3)
        specs = generate_spectrograms(models['conditional'], digits=digits, scale=cfg['guidance'][-1], sigma_data=sigma_data,
                                      sampler=cfg['sampler'], steps=cfg['steps'], seed=args.seed)
        for i, (d, w) in enumerate(zip(digits.tolist(), spec.waveform(specs.to(default_device())))):
            write_wav(Path(args.wavs)/f'{DIGITS[d]}_{i % 3}.wav', w, spec.sample_rate)
        out['wavs'] = str(args.wavs)

    out['total_seconds'] = time.perf_counter() - t_start   # only in a finished run's file
    write_json(out, args.out)
    print(f"wrote {args.out} ({out['total_seconds']:.0f} s)")


if __name__ == '__main__': main()
