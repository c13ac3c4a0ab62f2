"""``capfuse.fit``: ``make all`` from Python, returning the finished run's ``Predictor``.

A notebook user trains with ``predictor = capfuse.fit("data/demo", preset="default")`` instead
of shelling out to ``make``. It is the command line, not a second pipeline: the arguments are
parsed by the ``capfuse all`` parser (so every default is the CLI's) and run by the CLI's own
dispatch, so the folds, run folders, ``timings.csv``, the stage table, the submission, the
results file and ``runs/<dataset>/.lock`` are those of ``make all``. What differs is only how
it ends: errors are raised (``ConfigError``, ``DataError``, ``RunLocked``, ...) instead of
becoming exit codes, and the run is exported, still under the lock, into
``runs/<dataset>/bundle/``, whose ``Predictor`` is returned.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from capfuse.bundle import Predictor
from capfuse.bundle.export import ExportError, export_bundle
from capfuse.bundle.record import BUNDLE_FILE, SEAL, BundleError, read_record
from capfuse.cli import build_parser, dispatch
from capfuse.config import ConfigError
from capfuse.data.dataset import load_dataset
from capfuse.paths import Paths
from capfuse.report.run import project_root
from capfuse.utils.io import read_json
from capfuse.utils.log import log, setup_logging

RUN_BUNDLE = "bundle"  # runs/<dataset>/bundle/: the finished run as a bundle, written by fit only
# What an export writes that depends on when it ran, not on the run: two exports of one run
# differ only there, so a bundle that differs elsewhere describes another run.
EXPORT_MOMENT = ("created", SEAL)
# The Makefile's `data` target: these dataset names are the demo generator's, at these sizes.
DEMO_PRESETS = {
    "demo": "default",
    "tiny": "tiny",
    "large": "large",
    "shifted": "shifted",
    "recurring": "recurring",
}


def fit(
    data: str | os.PathLike,
    preset: str | None = "default",
    *,
    config: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    time_limit: str | float | None = None,
    plan: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    results: str | os.PathLike | None = None,
    quiet: bool | None = None,
    wait: bool = False,
) -> Predictor:
    """Run ``make all`` on ``data`` (folds, train, infer) and return the finished run's Predictor.

    ``data``: a COMP5329-layout folder; a folder named ``demo``, ``tiny`` or ``large`` is
    generated first when missing, as ``make data`` does. ``preset``: ``configs/presets/<preset>.yaml``
    (``config`` names a config file instead). ``root``: the project folder that holds
    ``configs/``, ``folds/``, ``runs/`` and ``submissions/`` (default: the one holding the current
    folder, so a notebook in ``notebooks/`` finds it); relative ``data``, ``config`` and
    ``results`` paths are taken from it. ``overrides``: ``"key=value"`` strings, as ``--set``.
    ``time_limit``: the run's budget (``"60m"``, ``"1h30m"`` or seconds), as ``--time-limit``;
    ``plan``: a budgeted run's ``plan.json`` to replay, as ``--plan``.
    ``results``: where the run's results file goes (default: ``$CAPFUSE_RESULTS``, else none).
    ``quiet``: no progress bars (default: bars unless ``CI`` or ``CAPFUSE_QUIET`` says otherwise).
    ``wait``: queue behind another run of the dataset instead of raising ``RunLocked``.
    """
    home = Path(root).resolve() if root is not None else project_root(Path.cwd())
    folder = _under(home, data)
    argv = ["--data", str(folder), "--root", str(home), "--config", str(_config(home, preset, config))]
    if isinstance(overrides, str):
        overrides = [overrides]  # one "key=value", not its characters
    for override in overrides:
        argv += ["--set", str(override)]
    if results is not None:
        argv += ["--results", str(_under(home, results))]
    if quiet:
        argv.append("--quiet")
    if wait:
        argv.append("--wait")
    if time_limit is not None:
        argv += _option("--time-limit", _budget(time_limit))
    if plan is not None:
        argv += _option("--plan", str(_under(home, plan)))
    args = _parse("all", argv)  # before anything is written: a bad argument changes nothing
    if not log.handlers:
        setup_logging("INFO")  # the CLI's log lines; a notebook that set up its own keeps them
    _make_data(folder)
    trained: dict = {}

    def export(paths: Paths, cfg: dict, quiet: bool, timings) -> None:
        ds = load_dataset(paths, cfg, quiet=quiet)
        try:
            folder = run_bundle(paths, cfg, ds)
        except ExportError as exc:
            raise ExportError(
                f"the run finished ({paths.submissions / f'{paths.dataset}-latest.csv'} is written), "
                f"but it cannot be exported as a bundle, so fit has no Predictor to return: {exc}"
            ) from exc
        trained["predictor"] = Predictor.load(folder, quiet=quiet)
        trained["predictor"].timings = timings

    with _restored_env("CAPFUSE_QUIET"):  # the CLI sets it for the process; a kernel lives on
        code = dispatch(args, then=export)
    if code:
        raise RuntimeError(f"capfuse all stopped with exit code {code}; the log above says why")
    return trained["predictor"]


def run_bundle(paths: Paths, cfg: dict, ds) -> Path:
    """``runs/<dataset>/bundle/``: the finished run exported as ``capfuse export`` does.

    Exported anew after every run and compared with the bundle already there: an identical one
    (all but its creation time) is kept, so a Predictor loaded from it stays valid; any other is
    replaced, whole. The caller holds the dataset's lock, so no other run writes here meanwhile."""
    folder = paths.runs / RUN_BUNDLE
    fresh, old = paths.runs / f".{RUN_BUNDLE}.new", paths.runs / f".{RUN_BUNDLE}.old"
    for leftover in (fresh, old):  # a fit killed mid-swap left these; nothing else writes them
        if leftover.exists():
            shutil.rmtree(leftover)
    export_bundle(paths, cfg, ds, fresh)
    if _same_run(folder, read_json(fresh / BUNDLE_FILE)):
        shutil.rmtree(fresh)
        log.info("bundle of the run: %s (unchanged)", folder)
        return folder
    if folder.exists() or folder.is_symlink():
        os.replace(folder, old)
    os.replace(fresh, folder)
    if old.exists():
        shutil.rmtree(old)
    log.info("bundle of the run: %s", folder)
    return folder


def _same_run(folder: Path, record: dict) -> bool:
    if folder.is_symlink() or not folder.is_dir():
        return False
    try:
        held = read_record(folder, verify=True)
    except BundleError:
        return False  # damaged or incomplete: replaced
    strip = lambda r: {k: v for k, v in r.items() if k not in EXPORT_MOMENT}
    return strip(held) == strip(record)


def _under(home: Path, path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else home / path


def _config(home: Path, preset: str | None, config: str | os.PathLike | None) -> Path:
    if config is not None:
        if preset not in (None, "default"):
            raise ValueError(f"give a preset ({preset!r}) or a config ({str(config)!r}), not both")
        return _under(home, config)
    presets = home / "configs" / "presets"
    path = presets / f"{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in presets.glob("*.yaml"))
        raise ConfigError(f"preset {preset!r}: no {path}; the presets are: {', '.join(known) or 'none'}")
    return path


def _budget(value: str | float) -> str:
    """``time_limit`` as the CLI's ``--time-limit`` reads it: text as given, a number as plain
    seconds (``90``, ``5400.5``; never ``1e+04``)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"time_limit must be text such as '60m' or a number of seconds, got {value!r}")
    return value if isinstance(value, str) else format(value, "f").rstrip("0").rstrip(".")


def _option(name: str, value: str) -> list[str]:
    """``[name, value]`` for `capfuse all`; an error, never a silent drop, where it lacks the option."""
    if name not in _subparser("all")._option_string_actions:
        raise NotImplementedError(f"{name} is not an option of `capfuse all` in this capfuse, so it cannot be passed")
    return [name, value]


def _subparser(command: str) -> argparse.ArgumentParser:
    return next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]


def _parse(command: str, argv: list[str]) -> argparse.Namespace:
    """``capfuse <command> <argv>`` parsed by the CLI's own subparser, errors raised, not exited on."""
    sub = _subparser(command)

    def refuse(message: str):
        raise ValueError(f"capfuse {command}: {message}")

    sub.error = refuse  # argparse would print the usage and exit the kernel
    args = sub.parse_args(argv)
    args.command = command
    return args


def _make_data(folder: Path) -> None:
    """What ``make data`` does before ``make all``: generate the demo dataset of that name (kept
    when it is already there), or check that another folder is a dataset."""
    name = folder.resolve().name
    if name in DEMO_PRESETS:
        if dispatch(_parse("data", ["--data", str(folder), "--preset", DEMO_PRESETS[name]])):
            raise RuntimeError(f"capfuse data --data {folder} failed; the log above says why")
    elif not (folder / "train.csv").is_file():
        raise FileNotFoundError(f"{folder / 'train.csv'} not found: data must be a COMP5329-layout folder")


@contextmanager
def _restored_env(name: str) -> Iterator[None]:
    before = os.environ.get(name)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
