"""The real-image FID/KID floor (notebook 05_fid): random sets of real Fashion-MNIST training images scored against
the 10,000 test images, with the trained classifier's 512-d features.

The GPU measurement (one command; writes the JSON and prints the Markdown table):

    python bench/fid_floor.py --out results/fid_floor.json

It needs the trained classifier where `miniai.models.resnet.fashion_classifier_path()` says ($MINIAI_CLASSIFIER,
else miniai's cache folder), written by nbs/04_resnet.ipynb or `python bench/train_classifier.py --epochs 5 20
--out results/classifier.json`; --classifier points elsewhere. Fashion-MNIST is read from --data-dir or $MINIAI_DATA.

CPU smoke test of the same code (trains a tiny classifier in seconds into a temporary folder; its numbers say
nothing about the real floor):

    python bench/fid_floor.py --quick --out /tmp/fid_floor_quick.json

Per size (default 512, 2048 and 10,000 images) it draws --draws independent random sets (seeded) and records every
FID and KID, their mean and standard deviation, plus the classifier's metadata and weights hash, the reference
size, the environment and the wall time.
"""
from __future__ import annotations
import argparse, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing miniai
from bench.benchkit import count, parse_bench_args, write_json
from miniai.core import run_environment
from miniai.fid import fashion_image_eval, floor_table, real_image_floor, weights_hash
from miniai.models.resnet import QUICK_CLASSIFIER_CONFIG, fashion_classifier_path, train_fashion_classifier, weights_metadata


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', required=True, help='JSON results file')
    p.add_argument('--quick', action='store_true', help='CPU smoke test: tiny classifier, 1,000 reference images, small sizes')
    p.add_argument('--classifier', default=None, help='trained classifier weights (default: fashion_classifier_path())')
    p.add_argument('--data-dir', default=None, help='Fashion-MNIST folder (default: $MINIAI_DATA)')
    p.add_argument('--sizes', type=count(), nargs='+', default=None, help='real images per evaluation (default 512 2048 10000)')
    p.add_argument('--draws', type=count(), default=None, help='random sets per size (default 5; 2 in --quick)')
    p.add_argument('--seed', type=int, default=0, help='seed of the random sets')
    p.add_argument('--bs', type=count(), default=512, help='batch size of feature extraction')
    return parse_bench_args(p, argv)   # refuses --quick figures inside results/




def main(argv=None):
    args = parse_args(argv)
    sizes = args.sizes or ([128, 512, 1000] if args.quick else [512, 2048, 10_000])
    draws = args.draws or (2 if args.quick else 5)
    with tempfile.TemporaryDirectory() as tmp:
        clf = args.classifier
        if args.quick and clf is None:
            clf = Path(tmp)/'tiny_classifier.safetensors'
            train_fashion_classifier(epochs=1, data_dir=args.data_dir, save_to=clf, progress=False, **QUICK_CLASSIFIER_CONFIG)
        clf = Path(clf) if clf is not None else fashion_classifier_path()
        t0 = time.perf_counter()
        ie = fashion_image_eval(clf, data_dir=args.data_dir, bs=args.bs, n_ref=1000 if args.quick else None, cache=not args.quick,
                                allow_sample=args.quick)
        t_ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = real_image_floor(ie, sizes=tuple(sizes), n_draws=draws, data_dir=args.data_dir, seed=args.seed,
                                allow_sample=args.quick)
        t_floor = time.perf_counter() - t0
        classifier = dict(path=str(clf), weights_sha256=weights_hash(ie.model), metadata=weights_metadata(clf))
    results = dict(command=' '.join([Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else list(argv))),
                   quick=args.quick, what='FID/KID of random real Fashion-MNIST train images vs the test-set reference',
                   reference=dict(split='test', n=len(ie.ref.feats), n_features=ie.ref.feats.shape[1]),
                   classifier=classifier, draws=draws, seed=args.seed, rows=rows,
                   seconds=dict(reference=round(t_ref, 2), floor=round(t_floor, 2)), environment=run_environment())
    table = floor_table(rows)
    results['table_markdown'] = table
    write_json(results, args.out)
    print(table)
    print(f"wrote {args.out}")


if __name__ == '__main__': main()
