"""Pieces shared by the GPU benchmark scripts: the --compile option, compiled training at one batch shape, results files.

Compiling the training step more than doubles a small UNet's training images/s on a GPU (results/bench_ddpm.json:
12,550 images/s with `reduce-overhead` against 5,158 eager), but each new input shape (the last incomplete batch)
or grad mode compiles again. So `CompileCB` makes the training loader drop each epoch's incomplete batch during `fit`
(the shuffle drops other images every epoch), and runs validation and everything after `fit` (sampling, at other
batch sizes) eagerly.
"""
from __future__ import annotations
import argparse, datetime, json, math, sys, time
from pathlib import Path
from typing import Callable
import torch
from miniai.accel import CompileCB, synchronize
from miniai.core import atomic_write, cache_dir, default_device
from miniai.learner import Callback, CancelFitException
from miniai.models.resnet import QUICK_CLASSIFIER_CONFIG, fashion_classifier_path, train_fashion_classifier

COMPILE_MODES = ('none', 'default', 'reduce-overhead')


def count(lo: int = 1) -> Callable[[str], int]:
    "An argparse type: a whole number >= `lo` (images, steps, epochs...); 0 would otherwise fall back to a default or crash late."
    def parse(s: str) -> int:
        v = int(s)   # (a ValueError: argparse says "invalid count value")
        if v < lo: raise argparse.ArgumentTypeError(f'must be >= {lo}, got {v}')
        return v
    parse.__name__ = 'count'
    return parse


def positive(s: str) -> float:
    "An argparse type: a number > 0 (minutes)."
    v = float(s)
    if not v > 0 or not math.isfinite(v): raise argparse.ArgumentTypeError(f'must be a finite number > 0, got {s}')
    return v


def add_compile_arg(p: argparse.ArgumentParser):
    "The `--compile MODE` option of a benchmark that trains (default: reduce-overhead, i.e. CUDA graphs)."
    p.add_argument('--compile', choices=COMPILE_MODES, default='reduce-overhead',
                   help='torch.compile the training step on CUDA (ignored elsewhere; default: %(default)s)')


def fid_bench_parser(doc: str, quick: str, nets: str = 'networks') -> argparse.ArgumentParser:
    "A parser with the options the FID benchmarks share: --out, --quick, --n, --batch, --seed, --weights-dir, --data-dir, --compile, --full-nets."
    p = argparse.ArgumentParser(description=doc.split('\n')[0])
    p.add_argument('--out', required=True, help='JSON results file (a Markdown table is written next to it)')
    p.add_argument('--quick', action='store_true', help=f'CPU smoke test: {quick}')
    p.add_argument('--n', type=count(), nargs='+', default=[10_000, 2048], help='samples per score (smaller ones are prefixes)')
    p.add_argument('--batch', type=count(), default=2048, help='images per sampling batch')
    p.add_argument('--seed', type=int, default=0, help='seed of the sampling noise (batch k uses seed `miniai.core.batch_seed(seed, k)`)')
    p.add_argument('--weights-dir', default=None, help=f"where trained {nets} are kept (default: cache_dir('models'))")
    p.add_argument('--data-dir', default=None, help='Fashion-MNIST folder (default: $MINIAI_DATA)')
    add_compile_arg(p)
    add_full_nets_arg(p)
    return p


def add_full_nets_arg(p: argparse.ArgumentParser):
    "The `--full-nets` option (with `--quick`): the full-size networks on quick data, epochs and sample counts."
    p.add_argument('--full-nets', action='store_true',
                   help="with --quick: the networks at their full sizes (data, epochs and sample counts stay quick): checks "
                        "on a CPU that the networks a GPU run trains build, train, save, load and sample; figures meaningless")


RESULTS_DIR = Path(__file__).resolve().parent.parent/'results'
QUICK_DIR = Path('runs/quick')   # where --quick runs write by default: never into results/


def bench_out(p: argparse.ArgumentParser, out, quick: bool, name: str) -> Path:
    "The results path: `out`, else results/NAME (runs/quick/NAME with --quick); --quick into results/ is refused (`p.error`)."
    path = Path(out) if out is not None else (QUICK_DIR if quick else Path('results'))/name
    if quick and RESULTS_DIR in path.resolve().parents:   # quick figures would replace (or pass for) measured ones
        p.error(f"--quick figures mean nothing and must not go into results/ (--out {out}): write them elsewhere, "
                f"e.g. --out {QUICK_DIR/name}")
    return path


def parse_bench_args(p: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    "`p.parse_args(argv)`, refusing `--full-nets` without `--quick`, and `--quick` results written into results/."
    args = p.parse_args(argv)
    if getattr(args, 'out', None) is not None: bench_out(p, args.out, args.quick, Path(args.out).name)
    if getattr(args, 'full_nets', False) and not args.quick:
        p.error('--full-nets goes with --quick (it keeps quick data and epochs but the full-size networks; '
                'without --quick everything is full-size already)')
    return args


def small_nets(args) -> bool:
    "Whether a bench run uses the tiny networks: `--quick` without `--full-nets`."
    return bool(args.quick and not getattr(args, 'full_nets', False))


def size_tag(args) -> str:
    "'full', 'quick' or 'quick_full_nets': names the weights a run keeps, so that runs of other sizes never load them."
    return 'full' if not args.quick else 'quick' if small_nets(args) else 'quick_full_nets'


def add_models_arg(p: argparse.ArgumentParser, names: tuple[str, ...]):
    "The `--models NAME...` option: train and score only these networks in this run (not part of the configuration)."
    p.add_argument('--models', nargs='+', choices=names, default=list(names),
                   help='train and score only these networks now; a later run with the others completes the same table '
                        '(how a measurement too long for one GPU lease is split; default: all)')


def compile_mode(mode: str | None, device: str | torch.device | None = None) -> str:
    "The compile mode that takes effect: `mode` on CUDA, 'none' elsewhere (recorded in the benchmarks' configs)."
    if mode is not None and mode not in COMPILE_MODES: raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {mode!r}")
    device = torch.device(default_device() if device is None else device)
    return mode if mode is not None and device.type == 'cuda' else 'none'


def compile_callbacks(mode: str | None, device: str | torch.device | None = None) -> list:
    "`[CompileCB]` (training at one batch shape, see its `drop_last`) on CUDA, else `[]`."
    mode = compile_mode(mode, device)
    if mode == 'none': return []
    return [CompileCB(None if mode == 'default' else mode)]


def command_line(script: str, argv=None) -> str:
    "The command that ran the bench script `script` (its `__file__`) with `argv` (default: this process's arguments), for a results file."
    return ' '.join(['python', f'bench/{Path(script).name}', *(sys.argv[1:] if argv is None else argv)])


def feature_hash(results: dict) -> str | None:
    "The sha256 of the FID feature network that a results file was scored with (`feature_model_sha256` or `classifier.weights_sha256`)."
    return results.get('feature_model_sha256') or (results.get('classifier') or {}).get('weights_sha256')


def set_aside(out: Path, why: str) -> Path:
    """Move the results file `out` (and its .md) into `superseded/` beside it, under a name no file has yet, and say so
    with `why`: a table that cannot be continued is kept for the record, never overwritten or silently dropped."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    folder = out.parent/'superseded'
    folder.mkdir(parents=True, exist_ok=True)
    dest, i = folder/f'{out.stem}-{stamp}{out.suffix}', 1
    while dest.exists(): dest, i = folder/f'{out.stem}-{stamp}-{i}{out.suffix}', i + 1
    out.replace(dest)
    if out.with_suffix('.md').exists(): out.with_suffix('.md').replace(dest.with_suffix('.md'))
    print(f"{out}: {why}. It is set aside as {dest}; this run starts the table again.", flush=True)
    return dest


def start_again_if_other_feature_network(kept: dict, results: dict, sha: str, out: Path, scored: dict) -> bool:
    """If the FIDs kept from `out` (`kept`, the results read from it) were scored with another feature network than `sha`,
    set the file aside (`set_aside`) and reset the scored entries of `results` (`scored`: key -> empty value); whether it did.
    A table with nothing scored yet (every `scored` entry empty) is continued as it is.

    FIDs of two feature networks do not compare (their scales differ), and the FID classifier is trained again on every
    GPU machine (its weights do not outlive a lease), so a table resumed on a later machine must check that it was the
    same one. Rather than lose the lease's work, the old table is kept aside whole and this run's rows start a new one;
    the trained networks' records stay (they do not depend on the feature network)."""
    prev = feature_hash(kept)
    if not any(results.get(k) for k in scored) or not prev or prev == sha or not out.exists(): return False
    dest = set_aside(out, f"its FIDs were scored with the feature network {prev[:12]}..., but this run's FID classifier is "
                          f"{sha[:12]}... (trained again, to other weights), and FIDs of two feature networks do not compare. "
                          "To continue the old table instead, bring back the classifier it was scored with")
    results.update(scored)
    results['superseded'] = [*results.get('superseded', []), dict(file=str(dest), reason='another FID feature network', feature_model_sha256=prev)]
    return True


def resume(results: dict, out: Path, keys: tuple[str, ...]) -> dict:
    """Continue the table in `out` if it has `results['config']`: copy its `keys` (and the record of the feature network
    its FIDs were scored with, which `--train-only` runs must keep) into `results`; return the old results, or {}.
    A table of another configuration is set aside (`set_aside`), not overwritten."""
    if not out.exists(): return {}
    old = json.loads(out.read_text())
    new = json.loads(json.dumps(results['config']))
    if old.get('config') != new:
        was = old.get('config') or {}
        diff = [f"{k} {was.get(k)!r} -> {new.get(k)!r}" for k in sorted({*was, *new}) if was.get(k) != new.get(k)] \
            if isinstance(was, dict) else [f'{was!r} -> {new!r}']
        why = f"another configuration ({'; '.join(diff)[:400]})"
        results['superseded'] = [dict(file=str(set_aside(out, f'it holds {why}')), reason=why)]
        return {}
    for k in (*keys, 'classifier', 'feature_model_sha256', 'superseded'):
        if k in old: results[k] = old[k]
    return old


def fid_classifier_path(args) -> Path:
    """The FID classifier's weights for a bench script's `args` (`classifier`, `quick`, `data_dir`), trained if missing:
    `--classifier`, else notebook 04's (20 epochs); quick mode one tiny classifier (1 epoch), cached, so that a quick
    table resumes under the same features."""
    if args.quick and not args.classifier:
        path = cache_dir('models')/'fashion_classifier_quick.safetensors'
        if not path.exists(): train_fashion_classifier(epochs=1, save_to=path, progress=False, data_dir=args.data_dir, **QUICK_CLASSIFIER_CONFIG)
        return path
    path = Path(args.classifier) if args.classifier else fashion_classifier_path()
    if not path.exists():
        print(f"no classifier at {path}: training it (20 epochs)", flush=True)
        train_fashion_classifier(epochs=20, save_to=path, data_dir=args.data_dir)
    return path


def forget_rows(results: dict, key: str, belongs: Callable[[dict], bool], network: str):
    """Drop the rows of `results[key]` (a list, or a dict of rows) that `belongs` to `network`, which is trained again.

    Trained weights do not outlive a GPU lease, so a table finished in a later lease trains its networks again; rows of
    two training runs of one network must not sit in one table (the EMA-vs-raw comparison, the guidance scales), so
    its earlier rows are scored again from the new weights."""
    rows = results.get(key)
    if not rows: return
    if isinstance(rows, dict): kept = {k: r for k, r in rows.items() if not belongs(r)}
    else: kept = [r for r in rows if not belongs(r)]
    if len(kept) < len(rows):
        print(f"{network}: trained again, so its {len(rows) - len(kept)} earlier `{key}` row(s) are scored again", flush=True)
    results[key] = kept


def log_run(results: dict, kept: dict) -> int:
    """Add this run (its `command` and `environment`, and the date) to the runs that built the table so far (`kept`'s
    `run_log`); return its index, which the rows it adds record as `run` (a table split across GPU leases shows which
    machine measured which row)."""
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
    results['run_log'] = [*kept.get('run_log', []), dict(command=results['command'], environment=results['environment'], date=now)]
    return len(results['run_log']) - 1


def runs_markdown(results: dict) -> list[str]:
    "Markdown lines listing the runs that built a table (`log_run`): the command, machine and date of each."
    log = results.get('run_log') or []
    if not log: return []
    where = lambda env: env.get('gpu') or env.get('device', '?')
    return ['', f"Built by {len(log)} run(s); each row's `run` in the JSON is its index here:", ''] + \
           [f"- run {i}: `{r['command']}` on {where(r['environment'])}, {r['date']}" for i, r in enumerate(log)]


def write_json(results: dict, out: str | Path):
    "Write `results` to the JSON file `out` atomically (`miniai.core.atomic_write`: never a half-written results file)."
    with atomic_write(out) as tmp: tmp.write_text(json.dumps(results, indent=1, default=str))


def write_results(results: dict, out: Path, markdown: Callable[[dict], str]):
    "Write `results` to the JSON file `out` (`write_json`) and `markdown(results)` beside it as .md."
    write_json(results, out)
    out.with_suffix('.md').write_text(markdown(results))


# ---- time budgets: training epochs that fit a GPU lease ----------------------------------------------

class StepTimer(Callback):
    "Seconds of training batches `warmup + 1` to `warmup + steps` (the device synchronised at both ends); then it cancels the fit."
    order = 1000
    def __init__(self, warmup: int, steps: int): self.warmup, self.steps, self.i, self.seconds = warmup, steps, 0, None
    def before_fit(self, learn): synchronize(); self.t0 = time.perf_counter()   # (warmup 0)
    def after_batch(self, learn):
        if not learn.training: return
        self.i += 1
        if self.i == self.warmup: synchronize(); self.t0 = time.perf_counter()
        if self.i == self.warmup + self.steps:
            synchronize(); self.seconds = time.perf_counter() - self.t0
            raise CancelFitException()


def keep_rng():
    "A context that puts the CPU's and the current CUDA device's RNG states back when it ends (`torch.random.fork_rng`)."
    return torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else [])


def seconds_per_image(make_learner, bs: int, warmup: int = 3, steps: int = 10) -> float:
    """Training seconds per image of the learner `make_learner()` builds (its own network copy and loaders): the mean of
    `steps` batches of `bs` after `warmup`. The RNG states are restored afterwards, so the real run that follows draws
    exactly what it would have drawn without this probe."""
    with keep_rng():
        timer = StepTimer(warmup, steps)
        learn = make_learner()
        learn.fit(warmup + steps, valid=False, cbs=[timer])   # (cancelled after warmup + steps batches; the Learner refuses an empty loader)
    if timer.seconds is None: raise RuntimeError(f"timing needs {warmup + steps} training batches of {bs}; the fit ended before (another callback cancelled it?)")
    return timer.seconds/(steps*bs)
