#!/usr/bin/env python
"""Enrol a new known system from a few clips into every trained system with embeddings, no retraining.

    python scripts/enroll.py --config X --system NAME clip.wav more_clips/   # enrol (--into aasist,ge2e to choose)
    python scripts/enroll.py --config X --remove NAME                        # remove it again
    python scripts/enroll.py --config X --list                               # what is enrolled
    python scripts/enroll.py --config X --refresh                            # re-embed after a retraining
    python scripts/enroll.py --config X --measure [--sizes 1,3,5,10] [--repeats 5]

After enrolment scripts/trace.py names the system: nearest class centroid (cosine) over the trained
and enrolled systems, OOD score of the centroid or k-NN scorer extended by the enrolment clips,
the dev threshold unchanged. --measure enrols each dev-unseen system from n of its dev clips and
writes <exp>/<system>/enrolment/enrolment.csv and enrolment_curve.png (outputs only, no model runs).
"""

import sys

try:
    from sourcetracing.enrol import main
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )

if __name__ == "__main__":
    sys.exit(main())
