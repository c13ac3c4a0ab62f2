"""The data stages that need no dataset yet: ``capfuse data`` (the demo) and ``capfuse faulty``.

Both refuse to replace a folder they did not write: a user's dataset at the same path stays.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from capfuse.data.demo import PRESETS, make_demo, make_unlabelled
from capfuse.data.faults import make_faulty_dataset
from capfuse.utils.log import log


def cli_data(args) -> int:
    preset = args.preset or ("tiny" if Path(args.data).name == "tiny" else "default")
    info = make_demo(args.data, seed=args.seed, force=args.force, **PRESETS[preset])
    log.info(
        "demo dataset (%s) in %s: %s",
        preset,
        args.data,
        {k: info[k] for k in info if k != "class_counts"} if isinstance(info, dict) else info,
    )
    if args.unlabelled:
        out = Path(f"{str(args.data).rstrip('/')}-unlabelled")
        # make_unlabelled renames a finished folder into place, so unlabelled_labels.csv
        # marks one it wrote; any other folder there is someone else's and stays.
        ours = (out / "unlabelled_labels.csv").is_file() and not out.is_symlink()
        if ours and not args.force:
            log.info("unlabelled folder %s exists; kept (--force rewrites it)", out)
        elif out.exists() and not ours and (not out.is_dir() or any(out.iterdir())):
            raise ValueError(
                f"{out} exists and was not written by `capfuse data --unlabelled` (it has no "
                "unlabelled_labels.csv); it is not replaced: move it away first"
            )
        else:
            if ours:
                shutil.rmtree(out)
            log.info(
                "unlabelled folder: %s",
                make_unlabelled(
                    out, args.unlabelled, size=PRESETS[preset]["size"], seed=args.seed, captions=not args.no_captions
                ),
            )
    return 0


def cli_faulty(args) -> int:
    out = Path(args.data)
    # make_faulty_dataset replaces its folder wholesale: only one it wrote (its test.csv
    # starts with the BOM and the spaced header no one else writes) or an empty one.
    try:
        ours = not out.is_symlink() and (out / "test.csv").read_bytes().startswith(b"\xef\xbb\xbfImageID , Caption")
    except OSError:
        ours = False
    if out.exists() and not ours and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(
            f"{out} exists and is not a dataset written by `capfuse faulty`; it is not replaced: "
            "move it away or pick another --data"
        )
    make_faulty_dataset(args.data)
    log.info("faulty dataset written to %s", args.data)
    return 0
