#!/usr/bin/env python
"""List exported miniai names (in `__all__`) without a docstring, and exported functions/classes without an example.

No example: no notebook uses the name outside the cell that defines it.

    python tools/check_docstrings.py            # report; exit status 1 if any gap (a module that fails to import is one)
    python tools/check_docstrings.py --no-examples   # docstrings only

A name "has an example" when some code cell of some notebook in nbs/ mentions it (as a whole word, not as an attribute
`x.name` unless it is a fastcore @patch method) and that cell is not the cell where it is defined (a top-level
`def name`, `class name` or `name = ...`) and is not a `show_doc(...)` cell.
Only functions and classes are checked: constants and other objects in `__all__` need neither (a name in `__all__`
that the module does not define is a gap)."""
import argparse, ast, importlib, inspect, json, pkgutil, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def modules():
    "Every `miniai` module, imported."
    import miniai
    names = ['miniai'] + [m.name for m in pkgutil.walk_packages(miniai.__path__, 'miniai.') if not m.name.endswith('_modidx')]
    res = {}
    for n in sorted(names):
        try: res[n] = importlib.import_module(n)
        except Exception as e: res[n] = None; print(f'IMPORT FAILED {n}: {type(e).__name__}: {e}')
    return res


def code_cells():
    "(notebook name, source) for every code cell of every notebook in nbs/."
    for f in sorted((ROOT/'nbs').glob('*.ipynb')):
        for c in json.loads(f.read_text())['cells']:
            if c['cell_type'] == 'code': yield f.name, ''.join(c['source'])


def defines(src, name):
    "Does this cell define `name` at top level (def, class or assignment)?"
    try: tree = ast.parse('\n'.join(l for l in src.splitlines() if not l.lstrip().startswith(('%', '!'))))
    except SyntaxError: return False
    for t in tree.body:
        if isinstance(t, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and t.name == name: return True
        if isinstance(t, (ast.Assign, ast.AnnAssign)):
            tgts = t.targets if isinstance(t, ast.Assign) else [t.target]
            if any(isinstance(x, ast.Name) and x.id == name for x in tgts): return True
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--no-examples', action='store_true', help='only check docstrings')
    args = ap.parse_args()
    cells = list(code_cells())
    no_doc, no_example, n_names, seen = [], [], 0, set()
    mods = modules()
    failed = [m for m, mod in mods.items() if mod is None]   # their names cannot be checked: a gap too
    for mname, mod in mods.items():
        if mod is None: continue
        for name in getattr(mod, '__all__', []):
            obj, patched = getattr(mod, name, None), False
            if obj is None:   # fastcore's @patch binds the module-level name to None: find the patched method
                obj = next((c.__dict__[name] for c in vars(mod).values() if inspect.isclass(c)
                            and inspect.isfunction(c.__dict__.get(name)) and c.__dict__[name].__module__ == mname), None)
                patched = obj is not None
            if obj is None: no_doc.append((mname, name, 'in __all__ but not defined')); continue
            if not (inspect.isfunction(obj) or inspect.isclass(obj)): continue
            if getattr(obj, '__module__', mname) != mname: continue   # re-exported from another module
            if id(obj) in seen: continue
            seen.add(id(obj)); n_names += 1
            own = obj.__dict__.get('__doc__') if inspect.isclass(obj) else obj.__doc__
            if inspect.isclass(obj) and (own or '').startswith(name + '('): own = None  # @dataclass's generated doc
            if not (own or '').strip(): no_doc.append((mname, name, 'class' if inspect.isclass(obj) else 'function'))
            if args.no_examples: continue
            pat = re.compile(rf'(?<![\w{"" if patched else "."}]){re.escape(name)}\b')  # methods: `learn.lr_find`
            if not any(pat.search(src) and not defines(src, name) and 'show_doc(' not in src for _, src in cells):
                no_example.append((mname, name))
    print(f'{n_names} exported functions/classes checked')
    print(f'\nmissing docstring ({len(no_doc)}):')
    for m, n, what in no_doc: print(f'  {m}.{n}  ({what})')
    if not args.no_examples:
        print(f'\nno example in any notebook ({len(no_example)}):')
        for m, n in no_example: print(f'  {m}.{n}')
    if failed: print(f'\nmodules that failed to import ({len(failed)}), names unchecked: {", ".join(failed)}')
    return 1 if no_doc or no_example or failed else 0


if __name__ == '__main__': sys.exit(main())
