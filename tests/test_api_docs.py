"""The public API is documented: every parameter of miniai's exported functions, constructors and public methods has
a type hint and a docment, and every hint resolves (tools/check_docstrings.py's parameter check, itself tested on
made-up modules in test_tools_mutation.py)."""
import inspect
import pytest


@pytest.fixture
def cd(load_script):
    "tools/check_docstrings.py as a module."
    return load_script('tools/check_docstrings.py')


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
