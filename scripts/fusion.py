#!/usr/bin/env python
"""Stage 8: score-level fusion of the judged systems' OOD scores (logistic regression fitted on dev),
exported and judged like every system.

    python scripts/fusion.py [--config configs/demo_hard.yaml] [fusion.members=[aasist:mahalanobis,mfcc:knn]]

fusion.members: auto (default) chooses the members on dev by forward selection with
leave-one-unseen-system-out cross-validation. Writes <exp_dir>/fusion/{outputs,results,ood_step}/.
"""

import sys

try:
    from sourcetracing.cli import run, step_parser
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


def body(cfg, args) -> int:
    from sourcetracing.judge import judge_system
    from sourcetracing.systems.fusion import SYSTEM, export_fusion

    export_fusion(cfg)
    judge_system(cfg, SYSTEM)
    return 0


def main(argv=None) -> int:
    return run(step_parser("fusion.py", __doc__), argv, body)


if __name__ == "__main__":
    sys.exit(main())
