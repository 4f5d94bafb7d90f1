"""Make the Fashion-MNIST sample shipped in miniai/assets/ from the 4 original IDX .gz files.

Usage: python tools/make_fashion_sample.py DATA_DIR [--train-per-class 200] [--test-per-class 100] [--out miniai/assets]

DATA_DIR is a folder holding the 4 original files (or a `fashion_mnist/` subfolder with them); their SHA-256
checksums are verified. For each class the script keeps the first images of that class in file order (train and
test separately), keeps them in file order, and writes them as gzipped IDX files (fixed gzip header, so the output
is byte-for-byte reproducible) plus `fashion_mnist_sample.json` (source checksums, chosen indices, file checksums).
Fashion-MNIST is MIT-licensed, (c) 2017 Zalando SE: the licence note travels with the sample.
"""
import argparse, json
from pathlib import Path
from miniai.data import (FASHION_FILES, FASHION_SHA256, MissingDataError, SAMPLE_MANIFEST, SAMPLE_PREFIX, balanced_indices,
                         find_fashion_mnist, read_idx, sha256_file, write_idx)

LICENSE = """Fashion-MNIST sample shipped with miniai
========================================

The files fashion_mnist_sample-*.gz in this folder hold a class-balanced subset of Fashion-MNIST
(200 training and 100 test images per class), taken unchanged from the original IDX files by
tools/make_fashion_sample.py. Fashion-MNIST: Han Xiao, Kashif Rasul, Roland Vollgraf,
"Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms", arXiv:1708.07747 (2017),
https://github.com/zalandoresearch/fashion-mnist . It is distributed under the MIT License:

The MIT License (MIT)

Copyright (c) 2017 Zalando SE

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('data_dir', help='folder with the 4 original Fashion-MNIST IDX .gz files (or a fashion_mnist/ subfolder)')
    p.add_argument('--train-per-class', type=int, default=200)
    p.add_argument('--test-per-class', type=int, default=100)
    p.add_argument('--out', default=str(Path(__file__).resolve().parent.parent/'miniai'/'assets'))
    a = p.parse_args()
    try: folder, _ = find_fashion_mnist(a.data_dir)   # only there; verifies checksums
    except MissingDataError as e: raise SystemExit(f"Fashion-MNIST not found: {e}") from None   # not a folder, or no files in it
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    man = {'source': 'Fashion-MNIST (zalandoresearch/fashion-mnist), MIT License, (c) 2017 Zalando SE',
           'source_sha256': FASHION_SHA256, 'rule': 'first images of each class in file order, kept in file order',
           'per_class': {'train': a.train_per_class, 'test': a.test_per_class}, 'indices': {}, 'sha256': {}}
    for split, per_class in man['per_class'].items():
        x, y = (read_idx(folder/n) for n in FASHION_FILES[split])
        idx = balanced_indices(y, 10*per_class, n_classes=10).numpy()
        man['indices'][split] = idx.tolist()
        for arr, name in zip((x[idx], y[idx]), FASHION_FILES[split]):
            write_idx(arr, out/(SAMPLE_PREFIX + name))
            man['sha256'][SAMPLE_PREFIX + name] = sha256_file(out/(SAMPLE_PREFIX + name))
    (out/SAMPLE_MANIFEST).write_text(json.dumps(man, indent=1) + '\n')
    (out/'LICENSE-fashion-mnist.txt').write_text(LICENSE)
    size = sum((out/n).stat().st_size for n in man['sha256'])
    print(f"wrote {len(man['indices']['train'])} train + {len(man['indices']['test'])} test images to {out} ({size/1e6:.2f} MB)")

if __name__ == '__main__': main()
