"""Re-encode the PNG outputs stored in notebooks losslessly, so that the tracked tree (which every GPU stage carries to the
device, see tests/test_gpu_carry_budget.py) stays small: an image of at most 256 colours becomes a palette PNG, every image
is saved with zlib's best compression, and the smaller encoding is kept only if it decodes to the very same RGBA pixels.

    python tools/shrink_pngs.py nbs/*.ipynb      # rewrites the notebooks in place, prints what each one saved
"""
import argparse, base64, io, json, sys
from pathlib import Path
import numpy as np
from PIL import Image


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im: return np.asarray(im.convert('RGBA'))


def _palette_image(rgba: np.ndarray) -> Image.Image | None:
    "The image as a palette ('P') image with one entry per colour (alpha kept in tRNS), or None above 256 colours."
    colours, index = np.unique(rgba.reshape(-1, 4), axis=0, return_inverse=True)
    if len(colours) > 256: return None
    im = Image.fromarray(index.reshape(rgba.shape[:2]).astype(np.uint8), 'P')
    im.putpalette(colours[:, :3].flatten().tolist())
    if (colours[:, 3] < 255).any(): im.info['transparency'] = bytes(colours[:, 3].tolist())
    return im


def smaller_png(png: bytes) -> bytes:
    "The smallest of `png` and its lossless re-encodings (palette when it has <= 256 colours; best compression)."
    with Image.open(io.BytesIO(png)) as im: im.load(); candidates, rgba = [im.copy()], np.asarray(im.convert('RGBA'))
    best = png
    if (pal := _palette_image(rgba)) is not None: candidates.append(pal)
    for im in candidates:
        buf = io.BytesIO()
        im.save(buf, 'PNG', optimize=True, **({'transparency': im.info['transparency']} if 'transparency' in im.info else {}))
        new = buf.getvalue()
        if len(new) < len(best) and np.array_equal(_pixels(new), rgba): best = new
    return best


def shrink_notebook(path: Path) -> tuple[int, int]:
    "Rewrite the PNG outputs of the notebook at `path` with `smaller_png` (the file only if one got smaller); (bytes before, after)."
    text = path.read_text()
    nb, changed = json.loads(text), False
    for cell in nb['cells']:
        for out in cell.get('outputs', []):
            data = out.get('data', {})
            if 'image/png' not in data: continue
            png = base64.b64decode(data['image/png'])
            new = smaller_png(png)
            if new != png: data['image/png'], changed = base64.b64encode(new).decode(), True
    if not changed: return len(text), len(text)
    new_text = json.dumps(nb, indent=1, ensure_ascii=False) + '\n'
    path.write_text(new_text)
    return len(text), len(new_text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('notebooks', nargs='+', type=Path)
    total = [0, 0]
    for path in p.parse_args(argv).notebooks:
        before, after = shrink_notebook(path)
        total[0] += before; total[1] += after
        if after < before: print(f"{path}: {before:,} -> {after:,} bytes")
    print(f"total: {total[0]:,} -> {total[1]:,} bytes", file=sys.stderr)


if __name__ == '__main__': main()
