"""The saved notebooks show their figures: a cell that draws at top level (`show_images(...)`, `show_image(...)`,
`plt.show()`) carries an image output. Executing notebooks with a non-interactive matplotlib backend
(MPLBACKEND=Agg) silently drops every figure; this catches it before readers do."""
import json, re
from pathlib import Path
import pytest

NBS = sorted((Path(__file__).resolve().parents[1]/'nbs').glob('*.ipynb'))
DRAWS = re.compile(r'^(show_images?\(|plt\.show\(\)|.*;\s*plt\.show\(\)\s*$)')


def cells_missing_figures(nb: dict) -> list[int]:
    "Indices of the code cells that draw at top level but carry no image output."
    missing = []
    for i, c in enumerate(nb['cells']):
        if c['cell_type'] != 'code': continue
        src = ''.join(c['source'])
        if re.search(r'^#\|\s*export', src, re.M): continue
        if not any(DRAWS.match(line) for line in src.split('\n')): continue
        if not any('image/png' in o.get('data', {}) for o in c.get('outputs', [])): missing.append(i)
    return missing


@pytest.mark.parametrize('path', NBS, ids=[p.stem for p in NBS])
def test_saved_notebook_shows_its_figures(path):
    missing = cells_missing_figures(json.loads(path.read_text()))
    assert not missing, f"{path.name}: cells {missing} draw a figure but have no image output (re-run without MPLBACKEND=Agg)"


def test_the_check_sees_a_missing_figure():
    cell = lambda src, outs: dict(cell_type='code', source=[src], outputs=outs, metadata={})
    img = [dict(output_type='display_data', data={'image/png': 'iVBOR', 'text/plain': ['<Figure>']}, metadata={})]
    nb = dict(cells=[cell('show_images(x, nrows=2);', img), cell('show_images(x)', []), cell('x = 1\nplt.show()', []),
                     cell('def f():\n    plt.show()', []), cell('#| export\nshow_image(x)', [])])
    assert cells_missing_figures(nb) == [1, 2]
