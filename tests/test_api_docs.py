"""The public API is documented: every parameter of miniai's exported functions, constructors and public methods has
a type hint and a docment (tools/check_docstrings.py's parameter check, tested here on made-up modules too)."""
import inspect, json, sys, types
from dataclasses import dataclass
import pytest


@pytest.fixture
def cd(load_script):
    "tools/check_docstrings.py as a module."
    return load_script('tools/check_docstrings.py')


def _own(cls, module):
    "Give `cls` and the functions in its body `module` as their module, as if defined there."
    cls.__module__ = module
    for f in vars(cls).values():
        f = getattr(f, '__func__', f)
        if inspect.isfunction(f): f.__module__ = module
    return cls


def full(a: int,        # the first
         b: str = 'x',  # the second
         *args, **kwargs):
    "Every parameter hinted and documented; *args and **kwargs need neither."


def half(a: int,  # documented
         b,       # documented, no hint
         c: float = 1.):
    "`b` lacks a hint, `c` a docment."


def blank(a: int,  #   
          ):
    "A comment of spaces is no docment."


@dataclass
class DC:
    "Fields are the constructor's parameters."
    a: int     # documented
    b: float = 0.


def test_param_gaps_of_functions(cd):
    "param_gaps: None when complete; otherwise the parameters without a hint and those without a docment."
    assert cd.param_gaps('full', full) is None
    assert cd.param_gaps('half', half) == ('half', ['b'], ['c'])
    assert cd.param_gaps('blank', blank) == ('blank', [], ['a'])
    assert cd.param_gaps('none', lambda: None) is None                     # nothing to document
    assert cd.param_gaps('max', max) is None                             # no signature to read
    exec_f = {}; exec('def g(a: int): pass', exec_f)                     # no source: docments cannot be read
    assert cd.param_gaps('g', exec_f['g']) == ('g', [], ['a'])


def test_object_param_gaps_of_classes(cd):
    "Constructors (dataclass fields too) and public methods are checked; private methods and callback events are not."
    class Callback: pass
    class Thing:
        "A thing."
        def __init__(self,
                     n: int,   # how many
                     m):
            pass
        def public(self, x: int): pass
        def _private(self, y): pass
        @staticmethod
        def stat(z: int,  # documented
                 ): pass
        @classmethod
        def make(cls, w): pass
        # not a callback: checked
        def before_fit(self, learn): pass
    class CB(Callback):
        "A callback."
        # an event: exempt
        def before_fit(self, learn): pass
        # more than `learn`: checked
        def after_batch(self, learn, extra: int): pass
    for c in (Thing, CB): _own(c, 'pkg.m')
    assert cd.object_param_gaps('Thing', Thing, 'pkg.m') == [
        ('Thing.__init__', ['m'], ['m']), ('Thing.public', [], ['x']), ('Thing.make', ['w'], ['w']),
        ('Thing.before_fit', ['learn'], ['learn'])]
    assert cd.object_param_gaps('CB', CB, 'pkg.m') == [('CB.after_batch', ['learn'], ['learn', 'extra'])]
    assert cd.object_param_gaps('DC', DC, DC.__module__) == [('DC.__init__', [], ['b'])]   # docments read its source
    Thing.public.__module__ = 'pkg.other'       # patched in from another module: checked there, not here
    assert ('Thing.public', [], ['x']) not in cd.object_param_gaps('Thing', Thing, 'pkg.m')
    assert cd.object_param_gaps('half', half, 'pkg.m') == [('half', ['b'], ['c'])]


def test_check_reports_parameter_gaps(cd, monkeypatch, tmp_path, capsys):
    "main: the parameter section counts parameters with a gap and fails the check; --no-params skips it."
    m = types.ModuleType('pkg.m')
    m.half, m.full = half, full
    m.__all__ = ['half', 'full']
    (tmp_path/'nbs').mkdir()
    (tmp_path/'nbs'/'x.ipynb').write_text(json.dumps({'cells': [{'cell_type': 'code', 'source': 'half(1, 2); full(1)'}]}))
    monkeypatch.setattr(cd, 'ROOT', tmp_path)
    monkeypatch.setattr(cd, 'modules', lambda: {'pkg.m': m})
    for f in (half, full): monkeypatch.setattr(f, '__module__', 'pkg.m')
    monkeypatch.setattr(sys, 'argv', ['check_docstrings.py'])
    assert cd.main() == 1
    out = capsys.readouterr().out
    assert 'parameters without a type hint or docment (2):\n  pkg.m.half: no hint: b; no docment: c\n' in out
    monkeypatch.setattr(sys, 'argv', ['check_docstrings.py', '--no-params'])
    assert cd.main() == 0
    assert 'parameters without' not in capsys.readouterr().out


def test_api_param_gaps_checks_patched_methods_once(cd):
    "api_param_gaps: a @patch-ed method of an exported class is checked with its class, one of a private class alone."
    class Shown: "Exported."
    class Hidden: "Not exported."
    def meth(self, a): "Patched onto Shown."
    def other(self, b): "Patched onto Hidden."
    Shown.meth, Hidden.other = meth, other
    m = types.ModuleType('pkg.m')
    m.Shown, m.Hidden, m.meth, m.other, m.gone = Shown, Hidden, None, None, None
    m.__all__ = ['Shown', 'meth', 'other', 'gone']
    for o in (Shown, Hidden, meth, other): o.__module__ = 'pkg.m'
    assert cd.api_param_gaps({'pkg.m': m, 'pkg.bad': None}) == [
        ('pkg.m', 'Shown.meth', ['a'], ['a']), ('pkg.m', 'other', ['b'], ['b'])]


def test_miniai_public_api_is_fully_documented(cd):
    "Every parameter of every exported miniai function, constructor and public method has a type hint and a docment."
    mods = cd.modules()
    assert None not in mods.values(), 'a miniai module failed to import'
    gaps = [f'{m}.{q}: hint {h}, docment {d}' for m, q, h, d in cd.api_param_gaps(mods)]
    assert not gaps, f'{len(gaps)} public functions or methods with undocumented parameters:\n' + '\n'.join(gaps)


def test_miniai_type_hints_resolve(cd):
    """Every hint of the public API names something the module defines or imports at run time (nbdev's `show_doc`
    evaluates them: a name imported only under `if TYPE_CHECKING:` would break the documentation)."""
    bad = []
    for m, name, obj, _ in cd.exported(cd.modules()):
        if obj is None: continue
        fs = [(name, obj)] if inspect.isfunction(obj) else [(f'{name}.{k}', getattr(f, '__func__', f)) for k, f in vars(obj).items()
                                                            if inspect.isfunction(getattr(f, '__func__', f))]
        for q, f in fs:
            try: inspect.signature(f, eval_str=True)
            except Exception as e: bad.append(f'{m}.{q}: {type(e).__name__}: {e}')
    assert not bad, '\n'.join(bad)
