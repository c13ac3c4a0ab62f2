"""Train/test shift: does the test set look like the training set, and which rows differ?

Random K-fold CV assumes the test rows are drawn like the training rows. This package checks
that assumption on the cached inputs instead of trusting it:

* ``adversarial``: a classifier that tells train from test, out of fold, per input (image
  vectors, caption vectors, both); its AUC with a DeLong interval against a null reference
  from random splits of the training rows, and every row's test-likeness score;
* ``novelty``: each test image's distance to its nearest training image, against the same for
  training images (leave-one-out);
* ``report``: what ``runs/<dataset>/shift.json`` holds, the manifest's summary, the log block
  and the warning line;
* ``run``: the inputs read from a run and the files written (``shift_report``), and the files
  read back for the second level (``read_shift``).
"""

from capfuse.shift.run import REPORT_FILE, SCORES_FILE, read_shift, shift_report

__all__ = ["REPORT_FILE", "SCORES_FILE", "read_shift", "shift_report"]
