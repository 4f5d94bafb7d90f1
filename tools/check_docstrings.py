#!/usr/bin/env python
"""List exported miniai names (in `__all__`) without a docstring, exported functions/classes without an example, and
public parameters without a type hint or a docment.

No example: no notebook uses the name outside the cell that defines it.

    python tools/check_docstrings.py            # report; exit status 1 if any gap (a module that fails to import is one)
    python tools/check_docstrings.py --no-examples   # no example check
    python tools/check_docstrings.py --no-params     # no parameter check

A name "has an example" when some code cell of some notebook in nbs/ mentions it (as a whole word, not as an attribute
`x.name` unless it is a fastcore @patch method) and that cell is not the cell where it is defined (a top-level
`def name`, `class name` or `name = ...`) and is not a `show_doc(...)` cell.
Only functions and classes are checked: constants and other objects in `__all__` need neither (a name in `__all__`
that the module does not define is a gap).

Parameters: every parameter (not self/cls, *args, **kwargs) of an exported function, of an exported class's
constructor (dataclass fields included) and of its public methods needs a type hint and a docment (fastcore's
trailing `# comment`). Callback event methods, whose only parameter is `learn`, are exempt."""
import argparse, ast, importlib, inspect, json, pkgutil, re, sys
from pathlib import Path
from fastcore.docments import docments

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


def params(f):
    "Parameters of `f` that need documenting: not self/cls, *args or **kwargs."
    try: sig = inspect.signature(f)
    except (TypeError, ValueError): return []
    return [p for p in sig.parameters.values()
            if p.name not in ('self', 'cls') and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def param_gaps(qual, f, doc_of=None):
    "(qual, params without a type hint, params without a docment) for `f`, or None if it has no gap."
    ps = params(f)
    if not ps: return None
    try: docs = docments(doc_of or f)
    except Exception: docs = {}   # no source to read (a builtin, a generated function): every parameter undocumented
    hint = [p.name for p in ps if p.annotation is inspect.Parameter.empty]
    doc = [p.name for p in ps if not (docs.get(p.name) or '').strip()]
    return (qual, hint, doc) if hint or doc else None


def is_callback(cls):
    "Is `cls` a Learner callback (a class named Callback in its MRO)?"
    return any(b.__name__ == 'Callback' for b in cls.__mro__[1:])


def object_param_gaps(name, obj, mname):
    "Parameter gaps of a function, or of a class's own constructor and public methods defined in module `mname`."
    if inspect.isfunction(obj): return [g for g in [param_gaps(name, obj)] if g]
    res = [param_gaps(f'{name}.__init__', obj.__init__, obj)] if '__init__' in obj.__dict__ else []
    for k, f in obj.__dict__.items():
        if k.startswith('_'): continue
        if isinstance(f, (staticmethod, classmethod)): f = f.__func__
        if not inspect.isfunction(f) or f.__module__ != mname: continue
        if is_callback(obj) and [p.name for p in params(f)] == ['learn']: continue   # an event
        res.append(param_gaps(f'{name}.{k}', f))
    return [g for g in res if g]


def exported(mods):
    """(module name, name, object, patched) for each function/class in a module's `__all__`, once, in its own module;
    (module name, name, None, False) for a name the module does not define."""
    seen = set()
    for mname, mod in mods.items():
        if mod is None: continue
        for name in getattr(mod, '__all__', []):
            obj, patched = getattr(mod, name, None), False
            if obj is None:   # fastcore's @patch binds the module-level name to None: find the patched method
                obj = next((c.__dict__[name] for c in vars(mod).values() if inspect.isclass(c)
                            and inspect.isfunction(c.__dict__.get(name)) and c.__dict__[name].__module__ == mname), None)
                patched = obj is not None
            if obj is None: yield mname, name, None, False; continue
            if not (inspect.isfunction(obj) or inspect.isclass(obj)): continue
            if getattr(obj, '__module__', mname) != mname: continue   # re-exported from another module
            if id(obj) in seen: continue
            seen.add(id(obj))
            yield mname, name, obj, patched


def api_param_gaps(mods):
    "(module name, qualified name, params without a hint, params without a docment) over all exported objects."
    items = list(exported(mods))
    in_class = {id(f) for m, _, o, _ in items if inspect.isclass(o) for f in vars(o).values()}
    return [(m, *g) for m, name, obj, patched in items if obj is not None and not (patched and id(obj) in in_class)
            for g in object_param_gaps(name, obj, m)]   # a patched method of an exported class is checked with it


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--no-examples', action='store_true', help='skip the example check')
    ap.add_argument('--no-params', action='store_true', help='skip the type hint and docment check')
    args = ap.parse_args()
    cells = list(code_cells())
    no_doc, no_example, n_names = [], [], 0
    mods = modules()
    failed = [m for m, mod in mods.items() if mod is None]   # their names cannot be checked: a gap too
    for mname, name, obj, patched in exported(mods):
        if obj is None: no_doc.append((mname, name, 'in __all__ but not defined')); continue
        n_names += 1
        own = obj.__dict__.get('__doc__') if inspect.isclass(obj) else obj.__doc__
        if inspect.isclass(obj) and (own or '').startswith(name + '('): own = None  # @dataclass's generated doc
        if not (own or '').strip(): no_doc.append((mname, name, 'class' if inspect.isclass(obj) else 'function'))
        if args.no_examples: continue
        pat = re.compile(rf'(?<![\w{"" if patched else "."}]){re.escape(name)}\b')  # methods: `learn.lr_find`
        if not any(pat.search(src) and not defines(src, name) and 'show_doc(' not in src for _, src in cells):
            no_example.append((mname, name))
    no_param = [] if args.no_params else api_param_gaps(mods)
    print(f'{n_names} exported functions/classes checked')
    print(f'\nmissing docstring ({len(no_doc)}):')
    for m, n, what in no_doc: print(f'  {m}.{n}  ({what})')
    if not args.no_examples:
        print(f'\nno example in any notebook ({len(no_example)}):')
        for m, n in no_example: print(f'  {m}.{n}')
    if not args.no_params:
        print(f'\nparameters without a type hint or docment ({sum(len(set(h) | set(d)) for _, _, h, d in no_param)}):')
        for m, q, h, d in no_param:
            print(f'  {m}.{q}:' + (f' no hint: {", ".join(h)};' if h else '') + (f' no docment: {", ".join(d)}' if d else ''))
    if failed: print(f'\nmodules that failed to import ({len(failed)}), names unchecked: {", ".join(failed)}')
    return 1 if no_doc or no_example or no_param or failed else 0


if __name__ == '__main__': sys.exit(main())
