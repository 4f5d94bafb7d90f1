"Tests for tools/shrink_pngs.py: notebook figures re-encoded losslessly (the same RGBA pixels), smaller or untouched."
import base64, io, json
import numpy as np
from PIL import Image


def _png(a: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO(); Image.fromarray(a).save(buf, 'PNG', compress_level=0, **kw); return buf.getvalue()


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im: return np.asarray(im.convert('RGBA'))


def test_few_colours_become_a_smaller_palette_png_with_the_same_pixels(load_script):
    shrink = load_script('tools/shrink_pngs.py')
    a = np.zeros((40, 60, 4), np.uint8)
    a[..., 3] = 255; a[10:20, :, 0] = 200; a[:, 30:, 2] = 90; a[35:, :5, 3] = 128   # 5 colours, one half transparent
    png = _png(a)
    new = shrink.smaller_png(png)
    assert len(new) < len(png) // 4 and np.array_equal(_pixels(new), a)
    with Image.open(io.BytesIO(new)) as im: assert im.mode == 'P'


def test_many_colours_keep_their_pixels_and_never_grow(load_script):
    shrink = load_script('tools/shrink_pngs.py')
    a = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)   # noise: ~1,000 colours
    for png in (_png(a), shrink.smaller_png(_png(a))):
        new = shrink.smaller_png(png)
        assert len(new) <= len(png) and np.array_equal(_pixels(new), _pixels(png))


def test_notebooks_change_only_their_figures(tmp_path, load_script):
    shrink = load_script('tools/shrink_pngs.py')
    a = np.full((16, 16, 3), 7, np.uint8)
    png = _png(a)
    cell = lambda outs: dict(cell_type='code', id='x', metadata={}, source=['1'], execution_count=None, outputs=outs)
    nb = dict(cells=[cell([dict(output_type='display_data', metadata={}, data={'image/png': base64.b64encode(png).decode(),
                                                                             'text/plain': ['<Figure>']})]),
                     cell([dict(output_type='stream', name='stdout', text=['hi\n'])])], metadata={}, nbformat=4, nbformat_minor=5)
    path, plain = tmp_path/'a.ipynb', tmp_path/'b.ipynb'
    path.write_text(json.dumps(nb, indent=1) + '\n')
    plain.write_text(json.dumps(dict(nb, cells=nb['cells'][1:]), indent=1) + '\n')
    before = plain.read_bytes()
    assert shrink.shrink_notebook(plain) == (len(before), len(before)) and plain.read_bytes() == before
    b, after = shrink.shrink_notebook(path)
    new = json.loads(path.read_text())
    data = new['cells'][0]['outputs'][0]['data']
    assert after < b and np.array_equal(_pixels(base64.b64decode(data['image/png'])), np.dstack([a, np.full((16, 16), 255, np.uint8)]))
    data['image/png'] = nb['cells'][0]['outputs'][0]['data']['image/png']
    assert new == nb   # nothing else changed
