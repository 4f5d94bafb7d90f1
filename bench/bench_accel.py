#!/usr/bin/env python
"""Training throughput (images/s) with and without mixed precision, EMA, gradient clipping and accumulation; results go to a JSON file.

Trains the lesson-22 diffusion UNet (diffusers `UNet2DModel`, channels (32, 64, 128, 256), 15.9 M parameters)
to predict the noise added to random 32x32 one-channel images (noising on the device, as in the course), with
miniai's `Learner`, fused AdamW and each configuration below; every figure is the median of interleaved timing
rounds after one warm-up epoch. The EMA update is also timed on its own (ms per update, foreach vs a Python loop).
With --grad it also times GradClipCB (clipping every step) and GradAccumCB(4) (a step every 4 batches of the same size).

On a GPU (from the repository root):
    python bench/bench_accel.py --out results/accel_throughput.json --compile --grad   # with compiled, clipping, accumulation (5 min)
    python bench/bench_accel.py --out results/ema_cost.json                     # eager only: the EMA cost (about 2 min)
Anywhere, to check that it runs (tiny UNet, a few batches; figures meaningless):
    python bench/bench_accel.py --quick --out /tmp/accel_quick.json
"""
import argparse, datetime, math, statistics, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing miniai
import torch
import torch.nn.functional as F
from torch import nn
from bench.benchkit import bench_out, count, command_line, write_json
from miniai.core import default_device, set_seed
from miniai.data import DataLoaders, DeviceImageLoader
from miniai.learner import BatchTransformCB, DeviceCB, Learner, TrainCB
from miniai.accel import (EMA, CompileCB, GradAccumCB, GradClipCB, MixedPrecision, fused_opt_func, model_device, synchronize,
                          train_throughput)


class UNet(nn.Module):
    "diffusers' UNet2DModel taking `(x_t, t)` and returning the predicted noise."
    def __init__(self, quick: bool):
        super().__init__()
        from diffusers import UNet2DModel
        kw = (dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                   down_block_types=('DownBlock2D', 'AttnDownBlock2D'), up_block_types=('AttnUpBlock2D', 'UpBlock2D'))
              if quick else dict(block_out_channels=(32, 64, 128, 256), norm_num_groups=8))
        self.unet = UNet2DModel(sample_size=32, in_channels=1, out_channels=1, **kw)
    def forward(self, x, t): return self.unet(x, t).sample


def noisify(batch):
    "Cosine-schedule noising on the device: `(x_t, t) -> predict eps`."
    x0 = batch[0]
    t = torch.rand(len(x0), device=x0.device)
    abar = torch.cos(t*math.pi/2).pow(2)[:, None, None, None]
    eps = torch.randn_like(x0)
    return abar.sqrt()*x0 + (1 - abar).sqrt()*eps, t*999, eps


class LoopEMA(EMA):
    "The slow EMA (for comparison only): one `lerp_` call per parameter tensor, in a Python loop."
    @torch.no_grad()
    def update(self):
        w = 1. - self.current_decay()
        for s, p in zip(self.shadow, self.params): s.lerp_(p, w)
        self.n_updates += 1


CONFIGS = {
    'float32': lambda: [],
    'bfloat16': lambda: [MixedPrecision()],
    'float16 + GradScaler': lambda: [MixedPrecision(torch.float16)],
    'bfloat16 + EMA (foreach)': lambda: [MixedPrecision(), EMA()],
    'bfloat16 + EMA (Python loop)': lambda: [MixedPrecision(), LoopEMA()],
}
GRAD_CONFIGS = {   # images/s counts every batch's images: accumulation takes a quarter of the optimizer steps
    'bfloat16 + GradClipCB(1)': lambda: [MixedPrecision(), GradClipCB(1.)],
    'bfloat16 + GradAccumCB(4)': lambda: [MixedPrecision(), GradAccumCB(4)],
}
COMPILE_CONFIGS = {
    'bfloat16 + compile': lambda: [MixedPrecision(), CompileCB()],
    'bfloat16 + compile + EMA (foreach)': lambda: [MixedPrecision(), CompileCB(), EMA()],
}


def make_learner(cbs, quick, bs, n_batches):
    set_seed(0)
    imgs = torch.randint(0, 256, (bs*n_batches, 1, 32, 32), dtype=torch.uint8)
    dl = DeviceImageLoader(imgs, None, bs=bs, shuffle=True, drop_last=True, seed=0)
    return Learner(UNet(quick).to(default_device()), DataLoaders(dl, dl), F.mse_loss, lr=4e-3,  # on the GPU before AdamW is built: fused
                   cbs=[DeviceCB(), BatchTransformCB(noisify), TrainCB(n_inp=2), *cbs],
                   opt_func=fused_opt_func(torch.optim.AdamW, eps=1e-5))


def ema_update_ms(ema_cls, model, n: int = 200) -> float:
    "Milliseconds per EMA update of `model`'s parameters (`n` updates timed after 10 untimed ones)."
    ema = ema_cls(); ema.track(model)
    dev = model_device(model)
    for _ in range(10): ema.update()
    synchronize(dev); t0 = time.perf_counter()
    for _ in range(n): ema.update()
    synchronize(dev)
    return 1000*(time.perf_counter() - t0)/n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true', help='tiny UNet and a few batches (checks that it runs, e.g. on a CPU)')
    ap.add_argument('--out', type=Path, default=None, help='JSON file to write (default: results/accel_throughput.json, none with --quick)')
    ap.add_argument('--bs', type=count(), default=None, help='batch size (default 512; 4 with --quick)')
    ap.add_argument('--batches', type=count(), default=None, help='batches per epoch (default 40; 2 with --quick)')
    ap.add_argument('--epochs', type=count(), default=None, help='timed epochs per configuration and round (default 1)')
    ap.add_argument('--rounds', type=count(), default=None, help='timing rounds, configurations interleaved; the median is reported (default 3; 1 with --quick)')
    ap.add_argument('--compile', action='store_true', help='also measure torch.compile configurations')
    ap.add_argument('--grad', action='store_true', help='also measure gradient clipping and accumulation (bfloat16, eager)')
    a = ap.parse_args(argv)
    bs, n_batches, epochs = a.bs or (4 if a.quick else 512), a.batches or (2 if a.quick else 40), a.epochs or 1
    rounds = a.rounds or (1 if a.quick else 3)
    out = None if a.quick and a.out is None else bench_out(ap, a.out, a.quick, 'accel_throughput.json')
    configs = {**CONFIGS, **(GRAD_CONFIGS if a.grad else {}), **(COMPILE_CONFIGS if a.compile else {})}

    # Every configuration is warmed up once, then timed in `rounds` interleaved rounds (a slow phase of the machine
    # then hits all configurations alike); the median of the rounds is reported, with the spread.
    learners = {name: make_learner(cbs(), a.quick, bs, n_batches) for name, cbs in configs.items()}
    any_learn = next(iter(learners.values()))
    n_params, device = sum(p.numel() for p in any_learn.model.parameters()), model_device(any_learn.model)
    times = {name: [] for name in configs}
    for r in range(rounds):
        for name, learn in learners.items():
            times[name].append(train_throughput(learn, epochs=epochs, warmup=1 if r == 0 else 0))
            print(f'round {r}: {name:38} {times[name][-1]:10,.1f} images/s', flush=True)
    results = {k: round(statistics.median(v), 1) for k, v in times.items()}
    base = results['bfloat16']
    ema_ms = {'foreach (one _foreach_lerp_)': ema_update_ms(EMA, any_learn.model), 'Python loop (one lerp_ per tensor)': ema_update_ms(LoopEMA, any_learn.model)}
    step_ms = 1000*bs/base
    fused = {bool(l.opt.defaults.get('fused')) for l in learners.values()}   # as built, not as asked for (CUDA parameters only)
    opt_name = 'fused AdamW' if fused == {True} else 'AdamW, not fused' if fused == {False} else 'AdamW, fused in some configurations'
    report = {
        'what': f'training images/s of the lesson-22 UNet (noise prediction, {opt_name}), after one warm-up epoch',
        'optimizer_fused': fused == {True},
        'command': command_line(__file__, argv),
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'device': torch.cuda.get_device_name(device) if device.type == 'cuda' else str(device),
        'torch': torch.__version__, 'quick': a.quick, 'model_params': n_params,
        'batch_size': bs, 'batches_per_epoch': n_batches, 'timed_epochs': epochs, 'rounds': rounds,
        'images_per_s': results,
        'images_per_s_spread': {k: [round(min(v), 1), round(max(v), 1)] for k, v in times.items()},
        'ema_cost_pct_vs_bfloat16': {k: round(100*(1 - v/base), 1) for k, v in results.items() if 'EMA' in k and 'compile' not in k},
        'grad_cost_pct_vs_bfloat16': {k: round(100*(1 - results[k]/base), 1) for k in GRAD_CONFIGS if k in results},  # < 0: faster
        'ema_update_ms': {k: round(v, 3) for k, v in ema_ms.items()},
        'ema_update_pct_of_bfloat16_step': {k: round(100*v/step_ms, 1) for k, v in ema_ms.items()},
        'n_param_tensors': sum(1 for _ in any_learn.model.parameters()),
    }
    if out is not None:
        write_json(report, out)
        print(f'wrote {out}')
    return report


if __name__ == '__main__': main()
