"The version ranges users install (settings.ini) agree with the two tested sets: the floor (requirements-min.txt) and the lock."
import configparser
from pathlib import Path
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent

def ranges(keys=('requirements', 'audio_requirements', 'dev_requirements')) -> dict[str, Requirement]:
    "The requirements of settings.ini (by default the library's, the audio extra's and the dev tools'), by canonical name."
    cfg = configparser.ConfigParser(); cfg.read(REPO/'settings.ini')
    reqs = {}
    for key in keys:
        for r in map(Requirement, cfg['DEFAULT'][key].split()):
            name = canonicalize_name(r.name)
            if name in reqs: reqs[name].specifier &= r.specifier   # fastcore: the library's floor and the dev tools' cap
            else: reqs[name] = r
    return reqs

def pins(file: str) -> dict[str, Version]:
    "name -> version of a pip freeze-style file (comments skipped)."
    out = {}
    for line in (REPO/file).read_text().splitlines():
        if line.strip() and not line.startswith('#'):
            name, v = line.split('==')
            out[canonicalize_name(name)] = Version(v.strip())
    return out

def floor(r: Requirement) -> Version | None:
    "The lowest version a requirement's `>=` allows, or None."
    lows = [Version(s.version) for s in r.specifier if s.operator == '>=']
    return max(lows) if lows else None

def minor(v: Version) -> tuple[int, int]: return (v.release + (0,))[:2]

def test_the_floor_file_pins_every_requirement_at_its_floor():
    "Every requirement is pinned within its range; the library's and the audio extra's at their floor's release"
    " (major.minor): a floor raised in settings.ini without a new requirements-min.txt (or the reverse) fails here."
    rs, got = ranges(), pins('requirements-min.txt')
    assert set(rs) <= set(got), set(rs) - set(got)
    for name, r in rs.items(): assert r.specifier.contains(got[name]), (name, str(got[name]), str(r.specifier))
    for name, r in ranges(('requirements', 'audio_requirements')).items():
        low = floor(r)
        if low is None: continue
        assert minor(got[name]) == minor(low), f"{name}: floor {low}, tested {got[name]}"

def test_the_lock_file_lies_within_the_ranges():
    "The lock file (CI's set) is one of the sets the ranges allow."
    rs, got = ranges(), pins('requirements-lock.txt')
    assert set(rs) <= set(got), set(rs) - set(got)
    for name, r in rs.items(): assert r.specifier.contains(got[name]), (name, str(got[name]), str(r.specifier))


def test_every_module_docstring_is_a_whole_summary():
    "nbdev makes a module's docstring of the first `> ` line of its notebook only: a summary wrapped over two lines was cut mid-sentence."
    import importlib, pkgutil
    import miniai
    names = [m.name for m in pkgutil.walk_packages(miniai.__path__, 'miniai.') if not m.name.endswith('_modidx')]
    docs = {n: (importlib.import_module(n).__doc__ or '').strip() for n in names}
    cut = {n: d[-50:] for n, d in docs.items() if d and not d.endswith(('.', '?', '!'))}
    assert not cut, cut
    assert sum(bool(d) for d in docs.values()) >= 20   # the summaries are there at all
