"""The run report's shift section: ``runs/<dataset>/shift.json`` as tables and thumbnails.

The thumbnails are the images themselves, shrunk to small JPEGs inside the page (data URIs),
so the page stays one self-contained file: the test rows most unlike any training row beside
their nearest training image, and the training rows a classifier finds most test-like.
"""

from __future__ import annotations

import base64
import html
import io

import pandas as pd
from PIL import Image

from capfuse.report import html as H
from capfuse.report import views
from capfuse.report.run import Run

THUMB = 112  # px, the longer side: enough to see what is drawn, small enough for 24 per page


def thumbnail(run: Run, image_id: str) -> str | None:
    """A small JPEG of the image as a data URI; None when it cannot be read."""
    try:
        with Image.open(run.image_path(image_id)) as im:
            im = im.convert("RGB")
            im.thumbnail((THUMB, THUMB))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=80)
    except (OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def gallery(run: Run, items: list[tuple[str, str]]) -> str:
    """``(ImageID, caption)`` pairs as a row of captioned thumbnails."""
    cells = []
    for image_id, caption in items:
        uri = thumbnail(run, image_id)
        img = (
            f'<img alt="{html.escape(image_id)}" src="{uri}" style="display:block">'
            if uri
            else f'<p class="missing">{html.escape(image_id)}: unreadable</p>'
        )
        cells.append(
            f'<figure class="thumb" style="display:inline-block;margin:4px;vertical-align:top;font-size:11px">'
            f"{img}<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    return '<div class="gallery">' + "".join(cells) + "</div>"


def shift_section(run: Run) -> H.Section:
    s = H.Section("shift", "Train/test shift")
    rep = run.shift_report()
    if rep is None:
        return s.add(H.missing("shift report", run.make_hint("infer")))
    s.add(
        H.rich(
            f"From `runs/{run.dataset}/shift.json`: can a classifier tell test rows from training rows? "
            f"{rep['method']['classifier']}, {rep['method']['folds']}; AUC 0.5 means it cannot. The null is "
            f"{rep['method']['null']}: what random splits show. A shift is flagged when {rep['method']['shift_when']}."
        )
    )
    if rep["warning"]:
        # H.rich's paragraph (backticks as code), in the warning's colours.
        s.add(H.rich(rep["warning"]).replace('<p class="note">', '<p class="missing" id="shift-warning">', 1))
    else:
        s.add(H.text("No input tells test from training rows better than random splits of the training rows do."))
    sub = run.submission()
    expected = (sub[1] if sub else {}).get("expected_test")
    if expected:
        s.add(
            H.text(
                f"Expected mean F1 on the test rows: {expected['mean_f1']:.4f}, the nested CV "
                f"({expected['nested_mean_f1']:.4f}) less the fall in the models' confidence from the out-of-fold "
                f"rows ({expected['confidence_oof']:.4f}) to the test rows ({expected['confidence_test']:.4f}), "
                "each row's confidence being the F1 its label set would expect from its own probabilities. "
                "No test label is read; under a shift this is the figure to read, not the CV."
            )
        )
    inputs = views.shift_inputs(run)
    if inputs is not None:
        s.add(H.table(inputs, digits=3))
    novelty = rep["novelty"]
    if novelty is not None:
        s.add(
            H.heading("Nearest-neighbour novelty of the test images"),
            H.text(
                f"{novelty['metric']}; the training rows' distances are leave-one-out. Share of test images "
                f"farther than the training rows' 95th percentile: {novelty['test_beyond_train_p95']:.3f} "
                f"(about {novelty['expected_without_shift']:.2f} without a shift)."
            ),
            H.table(pd.DataFrame({"": list(novelty), "value": [str(v) for v in novelty.values()]})),
        )
    novel = rep["test_most_novel"]
    if novel:
        s.add(
            H.heading("Test images most unlike any training image (each beside its nearest training image)"),
            H.table(pd.DataFrame(novel), digits=3),
            gallery(run, [(r["ImageID"], f"test {r['ImageID']} d={r['distance']:.3f}") for r in novel]),
            gallery(run, [(r["nearest_train"], f"nearest train {r['nearest_train']}") for r in novel]),
        )
    like = rep["train_most_test_like"]
    if like:
        s.add(
            H.heading(f"Training rows most like the test ({rep['scores_from']} vectors, out-of-fold)"),
            H.rich(f"Every training row's score is in `runs/{run.dataset}/shift_scores.csv`."),
            H.table(pd.DataFrame(like), digits=3),
            gallery(run, [(r["ImageID"], f"train {r['ImageID']} p={r['test_likeness']:.2f}") for r in like]),
        )
    return s
