#!/usr/bin/env bash
# Build the miniai documentation site from the notebooks in nbs/ into _docs/.
#
#   bash tools/build_docs.sh            # Quarto site in _docs/ (or Markdown in _docs/md/ without Quarto)
#   MINIAI_DOCS_MD=1 bash tools/build_docs.sh   # force the Markdown build
#
# The notebooks are not executed: pages show the outputs saved in each notebook. nbdev only runs the
# `#| export` cells and imports so that `show_doc` can render each exported function's signature and docstring.
# README.md is hand-written, so this script never calls `nbdev_docs`/`nbdev_readme` (they regenerate README.md
# from nbs/index.ipynb); it runs the same steps itself: nbs/nbdev.yml, nbs/sidebar.yml, nbdev's processed
# notebooks in _proc/, then `quarto render`.
#
# Quarto: if `quarto` is not on PATH we try `pip install --no-deps quarto-cli` (rendering without execution
# needs none of its jupyter dependencies, and the pinned environment stays as it is). That PyPI package is a source
# distribution whose build downloads the Quarto binary from GitHub, so it fails where only package registries
# are reachable; we then write the same pages as Markdown (nbconvert) into _docs/md/ and say so.
set -euo pipefail
cd "$(dirname "$0")/.."
export MINIAI_QUICK="${MINIAI_QUICK:-1}" MPLBACKEND="${MPLBACKEND:-Agg}"
start=$(date +%s)

if [ -z "${MINIAI_DOCS_MD:-}" ] && ! command -v quarto >/dev/null 2>&1; then
  echo "== quarto not found: trying 'pip install --no-deps quarto-cli'"
  timeout 300 python -m pip install --quiet --no-deps quarto-cli >/tmp/miniai-quarto-install.log 2>&1 \
    || echo "   pip install quarto-cli failed (see /tmp/miniai-quarto-install.log)"
  hash -r
fi
if [ -z "${MINIAI_DOCS_MD:-}" ] && command -v quarto >/dev/null 2>&1 && quarto --version >/dev/null 2>&1; then
  mode=quarto; echo "== quarto $(quarto --version)"
else
  mode=markdown
fi

echo "== nbdev: nbs/nbdev.yml, nbs/sidebar.yml, processed notebooks in _proc/"
py=$(mktemp --suffix=.py); trap 'rm -f "$py"' EXIT
cat >"$py" <<'PY'
import ast
import nbdev.processors as P
from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar
from nbdev.serve import proc_nbs

# nbdev runs every cell that contains an import so that show_doc can see the names; our chapters often open a
# cell with imports and then compute (train, measure FID...). Running those would execute the notebook, so for
# such "imports + other code" cells (not exported, no show_doc) we run the import statements only.
# Module level on purpose: proc_nbs's spawned workers re-import this file and get the same patch.
_orig_call = P.exec_show_docs.__call__
def _call(self, cell):
    trees = cell.parsed_() if cell.cell_type == 'code' else None
    if (trees and hasattr(self, 'k') and self.nb.has_docs_ and P.cell_lang(cell) == 'python'
        and not cell.directives_.keys() & {'export', 'exports', 'exporti', 'exec_doc'}
        and cell.directives_.get('eval:', [''])[0].lower() != 'false' and not P._show_docs(trees)):
        imps = [t for t in trees if isinstance(t, (ast.Import, ast.ImportFrom))]
        if imps and len(imps) < len(trees):
            self.k.run_cell('\n'.join(ast.unparse(t) for t in imps))
            if self.k.exc: raise Exception(f"Error in cell {cell.idx_} (imports only):\n{cell.source}") from self.k.exc
            return
    return _orig_call(self, cell)
P.exec_show_docs.__call__ = _call

if __name__ == '__main__':
    refresh_quarto_yml()            # writes nbs/nbdev.yml; keeps our nbs/_quarto.yml
    nbdev_sidebar.__wrapped__()     # writes nbs/sidebar.yml
    proc_nbs(force=True)            # _proc/: notebooks with show_doc cells executed, nothing else run
PY
python "$py"
rm -rf _docs
if [ "$mode" = quarto ]; then
  echo "== quarto render (no execution)"
  (cd _proc && quarto render --no-cache --no-execute)
  mv _proc/_docs _docs
  echo "built the Quarto site: _docs/index.html ($(find _docs -name '*.html' | wc -l) pages)"
else
  echo "== Quarto is NOT available here: building Markdown docs instead (nbconvert) into _docs/md/"
  mkdir -p _docs/md
  cat >"$py" <<'PY'
import re, sys
from pathlib import Path
import nbformat
from nbconvert import MarkdownExporter
from nbconvert.writers import FilesWriter
out = Path('_docs/md'); ex = MarkdownExporter(); fw = FilesWriter(build_directory=str(out))
for f in sorted(Path('_proc').glob('*.ipynb')):
    nb = nbformat.read(f, as_version=4)
    for c in nb.cells:
        c.pop('has_sd', None)                      # nbdev's marker, not part of the notebook schema
        if c.cell_type != 'code': continue
        dirs = [l for l in c.source.splitlines() if l.startswith('#|')]
        if any(re.match(r'#\|\s*(echo:\s*false|hide_input)', d) for d in dirs): c.source = ''
        else: c.source = '\n'.join(l for l in c.source.splitlines() if not l.startswith('#|')).strip()
    body, res = ex.from_notebook_node(nb, resources={'output_files_dir': f.stem + '_files'})
    body = re.sub(r'\n```\n\s*```\n', '\n', body)    # empty code blocks left by hidden inputs
    body = re.sub(r'\n{4,}', '\n\n\n', body)
    fw.write(body, res, notebook_name=f.stem)
PY
  python "$py"
  cp nbs/sidebar.yml _docs/md/sidebar.yml
  echo "built Markdown docs (NOT the Quarto site): _docs/md/index.md ($(ls _docs/md/*.md | wc -l) pages)"
fi
echo "docs built in $(( $(date +%s) - start ))s"
