#!/usr/bin/env python
"""Diffusion training throughput: a course-style loop against miniai's hot path, and DDIM-100 sampling time.

Both train the lesson-22 model (diffusers `UNet2DModel`, channels (32, 64, 128, 256), 8 GroupNorm groups, 15.9 M
parameters) on Fashion-MNIST (padded to 32x32, cosine schedule, continuous t) at batch 512, in one process:

  (a) course-style: a PyTorch `DataLoader` over the uint8 images whose `collate_fn` converts, pads and noises each
      batch on CPU workers; batches are copied to the GPU; fp16 autocast + `GradScaler`; Adam(eps=1e-5); the loss is
      read back every batch (`loss.item()`, as the course's `MetricsCB` did with `to_cpu`);
  (b) miniai: the images live on the GPU as uint8 (`DeviceImageLoader`), noising runs on the GPU inside the training
      step (`NoisifyCB`), bf16 autocast, fused Adam, no per-batch host sync (`ddpm_learner`); eager, then
      `torch.compile`, then `torch.compile(mode="reduce-overhead")` (CUDA graphs).

Each figure is images/s over `--steps` timed training steps after `--warmup` untimed ones (compilation, cudnn
autotuning), with the GPU synchronised around the timed part. Then DDIM with 100 steps (100 model evaluations) on
2048 images: eager float32 (TF32), eager bf16 autocast, compiled bf16. A variant that fails (e.g. a compiler error)
is recorded with its error instead of stopping the run.

On a GPU (from the repository root; writes results/bench_ddpm.json):
    python bench/bench_ddpm.py
Anywhere, to check that it runs (tiny UNet, a few steps, no compile; figures meaningless):
    python bench/bench_ddpm.py --quick --out /tmp/bench_ddpm_quick.json
Fashion-MNIST is read from --data-dir or $MINIAI_DATA.
"""
import argparse, datetime, json, sys, time, traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing miniai
import torch
import torch.nn.functional as F
from miniai.core import default_device, set_seed
from miniai.data import DataLoaders, DeviceImageLoader, fashion_mnist_arrays
from bench.benchkit import bench_out, count, command_line
from miniai.learner import Callback, CancelFitException
from miniai.accel import CompileCB, synchronize
from miniai.diffusion.ddpm import diffusers_unet, init_ddpm, ddpm_learner, linear_schedule
from miniai.diffusion.ddim import ddim_sample, ddim_timesteps
from miniai.diffusion.cosine import noisify_cosine

QUICK_UNET = dict(channels=(16, 32, 64), attention=(False, False, True), layers_per_block=1)


def make_model(quick):
    set_seed(0)
    return init_ddpm(diffusers_unet(**(QUICK_UNET if quick else {}), t_scale=1000.))


# ------------------------------------------------------------------ (a) the course-style loop
class UInt8Images(torch.utils.data.Dataset):
    "One item = one 28x28 uint8 image, as a row of an HF dataset would give it."
    def __init__(self, x): self.x = x
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return self.x[i]


def collate_noisify(items):
    "The course's `collate_ddpm`: stack, to float in [-0.5, 0.5], pad to 32x32, noisify: all on the CPU worker."
    x0 = F.pad(torch.stack(items)[:, None].float()/255 - 0.5, (2, 2, 2, 2), value=-0.5)
    (xt, t), eps = noisify_cosine(x0)
    return xt, t, eps


def course_style(x_u8, quick, bs, steps, warmup, workers, device):
    "Images/s of the course-style loop (see the module docstring)."
    model = make_model(quick).to(device)
    dl = torch.utils.data.DataLoader(UInt8Images(x_u8), batch_size=bs, shuffle=True, drop_last=True,
                                     collate_fn=collate_noisify, num_workers=workers, persistent_workers=workers > 0)
    opt = torch.optim.Adam(model.parameters(), lr=4e-3, eps=1e-5)
    cuda = device.type == 'cuda'
    scaler = torch.amp.GradScaler('cuda', enabled=cuda)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=warmup + steps + 1)
    losses, n, t0 = [], 0, None
    while n < warmup + steps:
        for xt, t, eps in dl:
            if n == warmup: synchronize(device); t0 = time.perf_counter()
            xt, t, eps = xt.to(device), t.to(device), eps.to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
                loss = F.mse_loss(model(xt, t), eps)
            scaler.scale(loss).backward()
            scaler.step(opt); scaler.update(); opt.zero_grad()
            sched.step()
            losses.append(loss.item())
            n += 1
            if n == warmup + steps: break
    synchronize(device)
    return steps*bs/(time.perf_counter() - t0)


# ------------------------------------------------------------------ (b) miniai's path
class StepTimer(Callback):
    "Time training steps `warmup`..`warmup+steps` (synchronising the device), then stop `fit`."
    order = 1000
    def __init__(self, steps, warmup): self.steps, self.warmup, self.n, self.seconds = steps, warmup, 0, None
    def after_batch(self, learn):
        if not learn.training: return
        self.n += 1
        dev = learn.dls.train.device
        if self.n == self.warmup: synchronize(dev); self.t0 = time.perf_counter()
        if self.n == self.warmup + self.steps:
            synchronize(dev); self.seconds = time.perf_counter() - self.t0
            raise CancelFitException()


def miniai_path(x_u8, quick, bs, steps, warmup, device, compile_mode=False):
    "Images/s of `ddpm_learner` on GPU-resident data with GPU noising; `compile_mode`: False, None or a mode."
    dl = DeviceImageLoader(x_u8, None, bs=bs, shuffle=True, drop_last=True, pad=2, value_range=(-0.5, 0.5),
                           device=device, seed=0)
    timer = StepTimer(steps, warmup)
    cbs = [timer] + ([] if compile_mode is False else [CompileCB(compile_mode)])
    learn = ddpm_learner(make_model(quick), DataLoaders(dl, dl), noisify_cosine, lr=4e-3, cbs=cbs,
                         precision='bf16', progress=False, device=device)
    learn.fit(max(2, -(-(warmup + steps)//len(dl)) + 1), valid=False)
    return steps*bs/timer.seconds


# ------------------------------------------------------------------ sampling
def sampling_time(quick, n, steps, device, mode):
    "Seconds for DDIM with `steps` model evaluations on `n` images (after an untimed warm-up run)."
    model = make_model(quick).to(device).eval()
    if mode == 'compiled bf16': model = torch.compile(model)
    s = linear_schedule()
    ts = ddim_timesteps(1000, steps)
    bf16 = 'bf16' in mode and device.type == 'cuda'
    def run(tsub):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return ddim_sample(model, (n, 1, 32, 32), tsub, s.abar[tsub], generator=0)
    run(ts[:2])  # warm-up (compilation, cudnn autotuning)
    synchronize(device); t0 = time.perf_counter()
    run(ts)
    synchronize(device)
    return time.perf_counter() - t0


def attempt(name, fn, table):
    try:
        table[name] = round(fn(), 3)
        print(f'{name:40s} {table[name]:>12,.3f}', flush=True)
    except Exception as e:  # record and go on: one failing variant must not lose the others
        table[name] = None
        table.setdefault('errors', {})[name] = f'{type(e).__name__}: {e}'[:500]
        print(f'{name:40s} FAILED: {type(e).__name__}: {e}', flush=True)
        traceback.print_exc(limit=3)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true', help='tiny UNet, a few steps, no compile (checks that it runs, e.g. on a CPU)')
    ap.add_argument('--out', type=Path, default=None, help='JSON file (default: results/bench_ddpm.json; runs/quick/bench_ddpm.json with --quick)')
    ap.add_argument('--data-dir', default=None, help='Fashion-MNIST folder (default: $MINIAI_DATA)')
    ap.add_argument('--bs', type=count(), default=None, help='batch size (default 512; 16 with --quick)')
    ap.add_argument('--steps', type=count(), default=None, help='timed training steps per variant (default 100; 3 with --quick)')
    ap.add_argument('--warmup', type=count(), default=None, help='untimed steps first (default 30; 1 with --quick)')
    ap.add_argument('--workers', type=count(0), default=None, help='DataLoader workers of the course-style loop (default 8; 2 with --quick)')
    ap.add_argument('--sample-n', type=count(), default=None, help='images for the sampling timing (default 2048; 8 with --quick)')
    ap.add_argument('--sample-steps', type=count(), default=None, help='DDIM steps for the sampling timing (default 100; 3 with --quick)')
    ap.add_argument('--no-compile', action='store_true', help='skip the torch.compile variants')
    a = ap.parse_args(argv)
    q = a.quick
    bs, steps, warmup = a.bs or (16 if q else 512), a.steps or (3 if q else 100), a.warmup or (1 if q else 30)
    workers, sample_n, sample_steps = a.workers if a.workers is not None else (2 if q else 8), a.sample_n or (8 if q else 2048), a.sample_steps or (3 if q else 100)
    out = bench_out(ap, a.out, q, 'bench_ddpm.json')
    device = default_device()
    torch.set_float32_matmul_precision('high')
    x_u8, _ = fashion_mnist_arrays('train', a.data_dir, allow_sample=a.quick)
    if q: x_u8 = x_u8[:bs*(steps + warmup + 1)]
    compile_ok = device.type == 'cuda' and not q and not a.no_compile

    train = {}
    attempt('course-style (collate noising, fp16)', lambda: course_style(x_u8, q, bs, steps, warmup, workers, device), train)
    attempt('miniai eager (GPU data+noise, bf16)', lambda: miniai_path(x_u8, q, bs, steps, warmup, device), train)
    if compile_ok:
        attempt('miniai + torch.compile', lambda: miniai_path(x_u8, q, bs, steps, warmup, device, None), train)
        attempt('miniai + compile reduce-overhead', lambda: miniai_path(x_u8, q, bs, steps, warmup, device, 'reduce-overhead'), train)
    base = train.get('course-style (collate noising, fp16)')
    ratios = {k: round(v/base, 2) for k, v in train.items() if k != 'errors' and v and base and not k.startswith('course')}

    sampling = {}
    for mode in ('eager fp32', 'eager bf16') + (('compiled bf16',) if compile_ok else ()):
        attempt(f'DDIM-{sample_steps} x {sample_n} images, {mode} (s)', lambda: sampling_time(q, sample_n, sample_steps, device, mode), sampling)

    n_params = sum(p.numel() for p in make_model(q).parameters())
    report = {
        'what': 'training images/s of the lesson-22 UNet on Fashion-MNIST (cosine noising): course-style loop vs miniai; '
                'DDIM sampling seconds',
        'command': command_line(__file__, argv),
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'device': torch.cuda.get_device_name(device) if device.type == 'cuda' else str(device),
        'torch': torch.__version__, 'quick': q, 'model_params': n_params, 'batch_size': bs, 'timed_steps': steps,
        'warmup_steps': warmup, 'course_workers': workers,
        'train_images_per_s': train, 'ratio_vs_course_style': ratios,
        'target': 'miniai >= 2x course-style (issue 4)',
        'best_ratio': max(ratios.values()) if ratios else None,
        'sampling_seconds': sampling, 'sampling_images': sample_n, 'sampling_steps': sample_steps,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + '\n')
    print(json.dumps({'ratio_vs_course_style': ratios}, indent=1))
    print(f'wrote {out}')
    return report


if __name__ == '__main__': main()
