"""Make the clothing64 and FSDD samples shipped in miniai/assets/ from the full data files.

Usage: python tools/make_data_samples.py DATA_DIR [--out miniai/assets]

DATA_DIR holds `rgb64/clothing64.npz` and `fsdd/fsdd_v1.0.10.npz` (the layout of $MINIAI_DATA); their SHA-256
checksums are verified. The samples let quick mode (and a fork's CI, which has no data) run every notebook when the
full sets are found nowhere; they are too small for any measurement.
- `clothing64_sample.npz`: every 17th image of each class (positions 0, 17, 34... within the class, in file order),
  all keys of the original kept for those rows (329 images), shrunk to 32x32 by `miniai.images.resize_images`, the
  size and the function of every quick run (at 64x64 it would not fit beside the full set in a GPU lease's carry).
- `fsdd_sample.npz`: takes 0-1 (official test split) and 5-7 (train) of every speaker and digit: 120 test + 180
  train clips, bit-identical samples, the original's keys (offsets recomputed).
Both are written as LZMA zip members with fixed timestamps and attributes, so the output is byte-for-byte
reproducible (with the same NumPy and liblzma versions), plus
`data_samples.json` (source checksums, rule, chosen indices, file checksums) and the licence notes.
"""
import argparse, io, json, zipfile
from pathlib import Path
import numpy as np
import torch
from miniai.audio import FSDD_FILE, FSDD_SHA256
from miniai.data import DATA_SAMPLES_MANIFEST, sha256_file
from miniai.images import resize_images

CLOTHING_SHA256 = '47295eb332c6cc116d9f39970e1251a391c54979dbf383705e5e4834e5bc7fea'
CLOTHING_STEP, CLOTHING_SIZE, FSDD_TRAIN_TAKES, FSDD_TEST_TAKES = 17, 32, (5, 6, 7), (0, 1)

LICENSES = {'LICENSE-clothing64.txt': """clothing64 sample shipped with miniai
=====================================

clothing64_sample.npz holds 329 of the 5,398 64x64 photos of clothing in clothing64.npz (every 17th image
of each class), shrunk to 32x32, made by tools/make_data_samples.py. The photos come from the clothing dataset by Alexey Grigorev
and contributors, https://github.com/alexeygrigorev/clothing-dataset (commit 7ed86a9), centre-cropped and
resized to 64x64. It is dedicated to the public domain under CC0 1.0 Universal
(https://creativecommons.org/publicdomain/zero/1.0/); credit is given here although it is not required.
""", 'LICENSE-fsdd.txt': """Free Spoken Digit Dataset sample shipped with miniai
====================================================

fsdd_sample.npz holds 300 of the 3,000 recordings of the Free Spoken Digit Dataset v1.0.10 (takes 0-1 and 5-7
of every speaker and digit), made by tools/make_data_samples.py. Changes: the WAV files were converted into one
NumPy archive (the 16-bit samples of all clips concatenated, bit-identical to the recordings, with offsets, digit,
speaker, take and file name of each clip); nothing else was altered.
Free Spoken Digit Dataset: Zohar Jackson, Cesar Souza, Jason Flaks, Yuxin Pan, Hereman Nicolas and Adhish Thite,
https://github.com/Jakobovski/free-spoken-digit-dataset .
It is licensed under the Creative Commons Attribution-ShareAlike 4.0 International licence (CC BY-SA 4.0,
https://creativecommons.org/licenses/by-sa/4.0/); this sample is an excerpt and is shared under the same licence.
"""}

def write_npz(path: Path, arrays: dict):
    "Write `arrays` as an .npz whose members are LZMA-compressed, with fixed timestamps (reproducible bytes)."
    with zipfile.ZipFile(path, 'w') as z:
        for k, a in arrays.items():
            buf = io.BytesIO(); np.lib.format.write_array(buf, np.asarray(a), allow_pickle=False)
            info = zipfile.ZipInfo(f'{k}.npy', date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_LZMA
            info.create_system, info.external_attr = 3, 0   # fixed (the Unix defaults), or they would follow the platform
            z.writestr(info, buf.getvalue())

def verified(path: Path, sha: str) -> Path:
    if not path.is_file(): raise SystemExit(f"{path}: not found")
    if (got := sha256_file(path)) != sha: raise SystemExit(f"{path}: SHA-256 {got}, expected {sha}")
    return path

def clothing_sample(src: Path) -> tuple[dict, list[int]]:
    with np.load(src) as d: a = {k: d[k] for k in d.files}
    idx = np.sort(np.concatenate([np.flatnonzero(a['labels'] == c)[::CLOTHING_STEP] for c in np.unique(a['labels'])]))
    out = {k: (v[idx] if v.ndim and len(v) == len(a['labels']) else v) for k, v in a.items() if k != 'source'}
    small = resize_images(torch.from_numpy(out['images']).permute(0, 3, 1, 2).contiguous(), CLOTHING_SIZE)
    out['images'] = small.permute(0, 2, 3, 1).contiguous().numpy()   # (N, 32, 32, 3) uint8, HWC as in the original
    out['source'] = np.array(json.dumps({'sample_of': json.loads(str(a['source'])),
                                         'rule': f'every {CLOTHING_STEP}th image of each class, in file order, '
                                                 f'shrunk to {CLOTHING_SIZE}x{CLOTHING_SIZE} by miniai.images.resize_images'}))
    return out, idx.tolist()

def fsdd_sample(src: Path) -> tuple[dict, list[int]]:
    with np.load(src) as d: a = {k: d[k] for k in d.files}
    idx = np.flatnonzero(np.isin(a['take'], FSDD_TRAIN_TAKES + FSDD_TEST_TAKES))
    off = a['offsets']
    clips = [a['audio'][off[i]:off[i+1]] for i in idx]
    out = {k: v[idx] for k, v in a.items() if k not in ('audio', 'offsets', 'sample_rate')}
    out.update(audio=np.concatenate(clips), offsets=np.concatenate([[0], np.cumsum([len(c) for c in clips])]).astype(np.int64),
               sample_rate=a['sample_rate'])
    return out, idx.tolist()

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('data_dir', help='folder with rgb64/clothing64.npz and fsdd/fsdd_v1.0.10.npz (the layout of $MINIAI_DATA)')
    p.add_argument('--out', default=str(Path(__file__).resolve().parent.parent/'miniai'/'assets'))
    a = p.parse_args()
    data, out = Path(a.data_dir), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    man = {}
    for name, src, sha, make, lic in (
            ('clothing64_sample.npz', data/'rgb64'/'clothing64.npz', CLOTHING_SHA256, clothing_sample, 'CC0 1.0'),
            ('fsdd_sample.npz', data/'fsdd'/FSDD_FILE, FSDD_SHA256, fsdd_sample, 'CC BY-SA 4.0')):
        arrays, idx = make(verified(src, sha))
        write_npz(out/name, arrays)
        man[name] = {'source': src.name, 'source_sha256': sha, 'licence': lic, 'n': len(idx), 'indices': idx,
                     'sha256': sha256_file(out/name)}
        print(f"wrote {out/name}: {len(idx)} items, {(out/name).stat().st_size/1e6:.2f} MB")
    man['clothing64_sample.npz']['rule'] = (f'every {CLOTHING_STEP}th image of each class (positions 0, {CLOTHING_STEP}, ... '
                                            f'in file order), shrunk to {CLOTHING_SIZE}x{CLOTHING_SIZE}')
    man['fsdd_sample.npz']['rule'] = f'takes {FSDD_TEST_TAKES} (test) and {FSDD_TRAIN_TAKES} (train) of every speaker and digit'
    (out/DATA_SAMPLES_MANIFEST).write_text(json.dumps(man, indent=1) + '\n')
    for n, text in LICENSES.items(): (out/n).write_text(text)

if __name__ == '__main__': main()
