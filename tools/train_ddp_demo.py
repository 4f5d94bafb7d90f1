#!/usr/bin/env python
"""Train a small Fashion-MNIST classifier with miniai's Learner, in one process or several (torchrun).

The same script runs both ways (used by notebook 18_distributed and tests/test_distributed.py, test_faults.py):

    python tools/train_ddp_demo.py --bs 16 --out runs/one                                    # 1 process, batch 16
    torchrun --standalone --nproc_per_node=2 tools/train_ddp_demo.py --bs 8 --out runs/two   # 2 x 8: same global batch
    torchrun --standalone --nproc_per_node=8 tools/train_ddp_demo.py --full --out runs/gpu8 --results results/ddp_demo_8gpu.json

Without --full it trains on the Fashion-MNIST sample shipped with miniai (no data download needed).
Rank 0 writes to --out: history.json (MetricsCB history, combined over processes), weights.safetensors (final
weights), predictions.npy with --predict; every rank writes rank<R>.json and losses_rank<R>.npy (its own batch losses).
"""
from __future__ import annotations
import argparse, json, os, sys, time
from functools import partial
from pathlib import Path
import torch
import torch.nn.functional as F
from torch import nn

from miniai.core import atomic_write, default_device, set_seed
from miniai.data import fashion_dls
from miniai.learner import (Learner, Callback, CancelFitException, TrainCB, DeviceCB, BatchTransformCB, MetricsCB,
                            ProgressCB, OneCycleCB, RecorderCB, rec_loss)
from miniai.accel import CheckpointCB, synchronize
from miniai.distributed import (init_distributed, cleanup_distributed, get_rank, get_world_size, is_main_process,
                                DistributedCB, StepCheckpointCB, sample_across_ranks, save_samples)

FULL = dict(n_train=0, n_valid=0, hidden=512, bs=256, epochs=5, lr=0.2)     # --full: the GPU run
SMALL = dict(n_train=256, n_valid=128, hidden=32, bs=16, epochs=3, lr=0.05)  # default: seconds on a CPU


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--epochs', type=int)
    p.add_argument('--bs', type=int, help='batch size per process (global batch = bs x number of processes)')
    p.add_argument('--n-train', type=int, help='training images, a class-balanced subset (0: all)')
    p.add_argument('--n-valid', type=int, help='test images used for validation (0: all)')
    p.add_argument('--hidden', type=int, help='hidden units of the 2-layer classifier')
    p.add_argument('--lr', type=float, help='peak learning rate of the one-cycle schedule (SGD, whose momentum the '
                   'schedule cycles between 0.95 and 0.85)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--noise', type=float, default=0., help='std of Gaussian noise added to training images on the device '
                   '(random numbers in every step: an exact resume must restore the random generators)')
    p.add_argument('--full', action='store_true', help=f'the whole Fashion-MNIST (needs $MINIAI_DATA or the hub): {FULL}')
    p.add_argument('--out', type=Path, help='folder for history.json, weights.safetensors, per-rank losses')
    p.add_argument('--results', type=Path, help='write a JSON results file (world size, device, throughput, final metrics)')
    p.add_argument('--checkpoint', type=Path, help='checkpoint file: saved after each epoch, resumed from if it exists')
    p.add_argument('--every-steps', type=int, default=0, help='with --checkpoint: also save every N training steps (mid-epoch)')
    p.add_argument('--max-steps', type=int, default=0, help='stop after N training steps, as if interrupted (checkpoint kept)')
    p.add_argument('--predict', type=int, default=0, help='save logits of the first N test images, computed split across processes')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: leave the default)')
    p.add_argument('--stall-at-step', type=int, default=0, help='test hook: after step N write --ready-file and wait to be killed')
    p.add_argument('--ready-file', type=Path)
    args = p.parse_args(None if argv is None else [str(a) for a in argv])
    args.argv = argv
    for k, v in (FULL if args.full else SMALL).items():
        if getattr(args, k) is None: setattr(args, k, v)
    if args.stall_at_step and not args.ready_file: p.error('--stall-at-step needs --ready-file')
    return args


def add_noise(batch, std: float):
    "Gaussian noise on the images, drawn on the device from torch's global generator."
    xb, *rest = batch
    return (xb + std*torch.randn_like(xb), *rest)


def _write_atomic(path: Path, data: bytes):
    with atomic_write(path) as tmp: tmp.write_bytes(data)


class StopAfterCB(Callback):
    "Stop `fit` after `n` training steps (after the checkpoint callbacks of that step ran)."
    order = 95
    def __init__(self, n: int): self.n, self.steps = n, 0
    def after_batch(self, learn):
        if not learn.training: return
        self.steps += 1
        if self.steps == self.n: raise CancelFitException()


class StallCB(Callback):
    "Test hook: after `n` training steps, write `ready` (atomically) and wait to be killed."
    order = 200
    def __init__(self, n: int, ready: Path): self.n, self.ready, self.steps = n, Path(ready), 0
    def after_batch(self, learn):
        if not learn.training: return
        self.steps += 1
        if self.steps != self.n: return
        _write_atomic(self.ready, str(self.steps).encode())
        while True: time.sleep(1)


class RankReportCB(Callback):
    "Per-rank facts: the callbacks active during the fit, training items seen, seconds spent in training phases."
    order = 90  # before StopAfterCB
    def before_fit(self, learn): self.items, self.callbacks, self.train_seconds = 0, None, 0.
    def before_epoch(self, learn):
        if self.callbacks is None: self.callbacks = sorted(type(cb).__name__ for cb in learn.cbs)
        if learn.training: synchronize(); self.t0 = time.perf_counter()
    def cleanup_epoch(self, learn):   # (not after_epoch, which a fit stopped by --max-steps skips: its steps still count)
        if learn.training and hasattr(self, 't0'): synchronize(); self.train_seconds += time.perf_counter() - self.t0; del self.t0
    def after_batch(self, learn):
        if learn.training: self.items += len(learn.batch[0])


def build(args) -> Learner:
    "The learner: data (sharded by DistributedCB under torchrun), model, callbacks from `args`."
    set_seed(args.seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(32*32, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10))
    limit = (args.n_train or None, args.n_valid or None)
    dls = fashion_dls(bs=args.bs, sample=not args.full, limit=limit, seed=args.seed, device=default_device())
    from torcheval.metrics import MulticlassAccuracy
    cbs = [DeviceCB(), TrainCB(), DistributedCB(seed=args.seed), MetricsCB(accuracy=MulticlassAccuracy()),
           OneCycleCB(args.lr), RecorderCB(loss=rec_loss), ProgressCB(), RankReportCB()]
    if args.noise: cbs.append(BatchTransformCB(partial(add_noise, std=args.noise), on_val=False))
    if args.checkpoint:
        cbs.append(StepCheckpointCB(args.checkpoint, args.every_steps) if args.every_steps else CheckpointCB(args.checkpoint))
    if args.max_steps: cbs.append(StopAfterCB(args.max_steps))
    if args.stall_at_step: cbs.append(StallCB(args.stall_at_step, args.ready_file))
    return Learner(model, dls, F.cross_entropy, lr=args.lr, cbs=cbs, opt_func=partial(torch.optim.SGD, momentum=0.9))


def write_outputs(args, learn, seconds: float):
    "Per-rank losses and report on every rank; history, weights, predictions and results on rank 0."
    rank, world = get_rank(), get_world_size()
    report = next(cb for cb in learn.cbs if isinstance(cb, RankReportCB))
    preds = None
    if args.predict:  # a collective: every rank takes part
        learn.model.eval()
        xv = learn.dls.valid.get_batch(torch.arange(args.predict, device=learn.dls.valid.device))[0]
        with torch.no_grad():
            preds = sample_across_ranks(lambda s, c: learn.model(xv[s:s+c]), args.predict, bs=32, progress=False)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        save_samples(args.out/f'losses_rank{rank}.npy', learn.recorder.values('loss'), allow_nonfinite=True)
        _write_atomic(args.out/f'rank{rank}.json', json.dumps(
            {'rank': rank, 'world_size': world, 'items_seen': report.items, 'callbacks': report.callbacks}).encode())
    if not is_main_process(): return
    history = learn.metrics.history
    if args.out:
        from safetensors.torch import save_file
        _write_atomic(args.out/'history.json', json.dumps(history, indent=1).encode())
        with atomic_write(args.out/'weights.safetensors') as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in learn.model.state_dict().items()}, str(tmp))
        if preds is not None: save_samples(args.out/'predictions.npy', preds)
    if args.results:
        dev = default_device()
        cmd = ' '.join(map(str, sys.argv[1:] if args.argv is None else args.argv))
        local = int(os.environ.get('LOCAL_WORLD_SIZE', world))   # processes per machine (torchrun sets it)
        launch = f'--standalone --nproc_per_node={world}' if local == world else f'--nnodes={world//local} --nproc_per_node={local}'
        res = {'command': f'torchrun {launch} tools/train_ddp_demo.py {cmd}'.strip(),
               'world_size': world, 'device': torch.cuda.get_device_name(dev) if dev.type == 'cuda' else str(dev),
               'bs_per_process': args.bs, 'global_batch': args.bs*world, 'epochs': args.epochs, 'hidden': args.hidden,
               'train_images': learn.dls.train.dataset_len, 'fit_seconds': round(seconds, 2),
               'train_seconds': round(report.train_seconds, 2),  # training phases only (rank 0), first epoch included
               'train_images_per_s': round(report.items*world/report.train_seconds, 1) if report.train_seconds else None,
               'final': history[-1] if history else None}
        args.results.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(args.results, json.dumps(res, indent=1).encode())
        print(json.dumps(res, indent=1))


def main(argv=None) -> Learner:
    "Parse `argv`, join the process group if launched by torchrun, train, write the outputs; returns the learner."
    args = parse_args(argv)
    if args.threads: torch.set_num_threads(args.threads)
    init_distributed()
    learn = build(args)
    t0 = time.perf_counter()
    learn.fit(args.epochs)
    synchronize()
    write_outputs(args, learn, time.perf_counter() - t0)
    return learn


if __name__ == '__main__':
    try: main()
    finally: cleanup_distributed()
