"""``capfuse results``: results files for runs finished earlier, and the README's presets table.

    capfuse results collect --run runs/<dataset> [--preset NAME] [--manifest FILE] [--results results]
    capfuse results render [--results results] [--readme README.md] [--check]

``collect`` is for a run made before its commands wrote results files, or without
``--results``: the figures come from the run's files, the commit from its manifest (the commit
the run was made at, not this checkout's), and the machine fields from this host, which the
file says. ``render`` rewrites the block between ``<!-- results:presets -->`` and
``<!-- /results:presets -->`` in the README from ``results/runs/``; ``--check`` only compares.
"""

from __future__ import annotations

from pathlib import Path

from capfuse.results.machine import machine_record
from capfuse.results.presets import BEGIN, END, current_block, presets_block, replace_block
from capfuse.results.runs import manifest_path, plain_commit, preset_of, write_run_results
from capfuse.results.tables import command_line
from capfuse.utils.io import read_json, write_text
from capfuse.utils.log import log


def collect(run: Path, results: Path, *, preset: str | None = None, manifest: Path | None = None) -> Path:
    """Write the ``runs`` results file of the finished run folder ``run``; returns the CSV's path."""
    if not run.is_dir():
        raise FileNotFoundError(f"{run} is not a run folder: give runs/<dataset> of a finished `make all`")
    manifest = manifest or manifest_path(run)
    if not manifest.exists():
        raise FileNotFoundError(
            f"{manifest} not found: collect reads the manifest `capfuse infer` writes (give --manifest if it lies elsewhere)"
        )
    record = read_json(manifest)
    root = run.resolve().parent.parent
    models = record.get("models") or {}
    preset = preset or preset_of(models, root / "configs" / "presets")
    if preset is None:
        raise ValueError(
            f"no preset of configs/presets/ trains exactly this run's models ({', '.join(models)}): "
            "say which it ran with --preset NAME"
        )
    machine = machine_record(root, commit=plain_commit(record.get("git_commit"))).fields()
    written = write_run_results(
        results, run, record, preset=preset, machine=machine, command=command_line(), collected=True
    )
    return written.csv


def render(results: Path, readme: Path, *, check: bool = False) -> bool:
    """Rewrite the presets block of ``readme``; returns whether it was (``check``: would be) changed."""
    text = readme.read_text(encoding="utf-8")
    if current_block(text) is None:
        raise ValueError(f"{readme} has no {BEGIN} ... {END} block: put the two markers where the presets table goes")
    new = replace_block(text, presets_block(results, readme.parent))
    if new != text and not check:
        write_text(readme, new)
    return new != text


def cli(args) -> int:
    if args.action == "collect":
        manifest = Path(args.manifest) if args.manifest else None
        csv = collect(Path(args.run), Path(args.results), preset=args.preset, manifest=manifest)
        print(f"wrote {csv} and {csv.with_suffix('.md')}")
        return 0
    readme = Path(args.readme)
    changed = render(Path(args.results), readme, check=args.check)
    if args.check:
        if changed:
            log.error(
                "%s: the presets table differs from %s/runs/; `capfuse results render` rewrites it",
                readme,
                args.results,
            )
            return 1
        print(f"{readme}: the presets table is up to date")
        return 0
    print(f"{readme}: presets table {'rewritten' if changed else 'already up to date'}")
    return 0
