"""Measure how fast one epoch of Fashion-MNIST batches reaches the device, and write results/data_throughput.json.

Usage (on a GPU machine, with the data under $MINIAI_DATA/fashion_mnist or a data folder as argument):
    python tools/bench_data.py [DATA_DIR] [--workers 0 4] [--out results/data_throughput.json]

Compares miniai's DeviceImageLoader (all images on the device as uint8; batches cut, padded to 32x32 and scaled
to [-1, 1] there) with a course-style torch DataLoader over the Hugging Face dataset (per-item PIL -> tensor
transform, batches copied to the device). Each path: best of several full passes over the 60,000 training images.
"""
import argparse, json, platform, time
from pathlib import Path
import numpy as np
import torch
import torch.nn.functional as F
from miniai.core import default_device
from miniai.data import DataLoaders, fashion_dls, load_fashion_mnist

def course_tfm(b):
    "Per-item conversion the course way: PIL -> float tensor, pad 2, scale to [-1, 1]."
    b['image'] = [F.pad(torch.from_numpy(np.array(o, dtype=np.float32))[None]/255, (2,)*4)*2 - 1 for o in b['image']]
    return b

def best_epoch(dl, device, repeats):
    "Images per epoch and best seconds over `repeats` full passes, batches on `device`, synchronised at the end."
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); n = 0
        for xb, yb in dl:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            n += len(xb)
        if device.type == 'cuda': torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return n, min(times)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('data_dir', nargs='?', default=None)
    p.add_argument('--bs', type=int, default=512)
    p.add_argument('--workers', type=int, nargs='*', default=[0, 4])
    p.add_argument('--out', default=None, help='results file (default: results/data_throughput.json, on a GPU only)')
    a = p.parse_args()
    dev = default_device()
    if a.out is None and dev.type != 'cuda':   # the committed figure is a GPU one: a CPU run must not replace it
        p.error(f"no GPU here ({dev}): pass --out elsewhere to measure on this device (results/data_throughput.json is the GPU figure)")
    a.out = a.out or 'results/data_throughput.json'
    res = {'device': torch.cuda.get_device_name() if dev.type == 'cuda' else str(dev), 'torch': torch.__version__,
           'python': platform.python_version(), 'bs': a.bs, 'rows': []}
    dls = fashion_dls(bs=a.bs, data_dir=a.data_dir, seed=0)
    n, t = best_epoch(dls.train, dev, repeats=10)
    res['rows'].append({'loader': 'DeviceImageLoader', 'workers': 0, 'images': n, 'seconds': t, 'images_per_s': n/t})
    dd = load_fashion_mnist(a.data_dir, allow_sample=False)
    for w in a.workers:
        dl = DataLoaders.from_dd({'train': dd['train'].with_transform(course_tfm), 'test': dd['test']}, bs=a.bs,
                                 num_workers=w, pin_memory=dev.type == 'cuda').train
        n, t = best_epoch(dl, dev, repeats=2)
        res['rows'].append({'loader': 'DataLoader per-item', 'workers': w, 'images': n, 'seconds': t, 'images_per_s': n/t})
    for r in res['rows']: print(f"{r['loader']:>22} workers={r['workers']}: {r['images']:,} images in {r['seconds']:.3f} s = {r['images_per_s']:,.0f}/s")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + '\n')
    print(f"wrote {a.out}")

if __name__ == '__main__': main()
