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
    from sourcetracing import enrol
    from sourcetracing.cli import count_list, exp_config, exp_parser, report_error, split_overrides
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


def parser():
    parser = exp_parser("enroll.py", enrol.__doc__)
    parser.add_argument("inputs", nargs="*", help="clips or folders to enrol from; key=value overrides too")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--system", default=None, help="enrol a system of this name from the clips")
    action.add_argument("--remove", default=None, metavar="NAME", help="remove an enrolled system")
    action.add_argument("--list", action="store_true", help="list the enrolled systems")
    action.add_argument(
        "--refresh", action="store_true", help="re-embed the recorded clips of every enrolled system"
    )
    action.add_argument("--measure", action="store_true", help="measure enrolment on the dev-unseen systems")
    parser.add_argument(
        "--into", default=None, help="comma-separated trained systems (default: every eligible one)"
    )
    parser.add_argument("--replace", action="store_true", help="re-enrol a system that is enrolled already")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda (default: the config's)")
    parser.add_argument(
        "--sizes",
        type=count_list,
        default=list(enrol.SIZES),
        help="--measure: enrolment sizes n (default 1,3,5,10)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="--measure: seeded draws per system and n")
    parser.add_argument("--seed", type=int, default=0, help="--measure: seed of the draws")
    return parser


def main(argv: list[str] | None = None) -> int:
    from sourcetracing.errors import DataError, SourceTracingError
    from sourcetracing.layout import ExperimentLayout

    args = parser().parse_intermixed_args(argv)  # clips may come before or after the options
    inputs, overrides = split_overrides(args.inputs)
    into = [s.strip() for s in args.into.split(",") if s.strip()] if args.into else None
    try:
        cfg = exp_config(args, overrides)
        layout = ExperimentLayout.of(cfg)
        if args.system is not None:
            if not inputs:
                raise DataError("give the clips (files or folders) to enrol the system from")
            entry = enrol.enrol(cfg, args.system, inputs, into, args.replace, args.device)
            into_text = ", ".join(f"{s} ({p['n_clips']} clips)" for s, p in entry["into"].items())
            print(f"enrolled '{args.system}' into {into_text}; record in {layout.enrolled}")
        elif args.remove is not None:
            enrol.remove(cfg, args.remove)
            print(f"removed '{args.remove}'")
        elif args.list:
            for name, entry in enrol.read_record(layout)["systems"].items():
                print(
                    f"{name}\t{len(entry['clips'])} clips\t{entry['enrolled_at']}\tinto {', '.join(entry['into'])}"
                )
        elif args.refresh:
            names = enrol.refresh(cfg, args.device)
            print(f"re-embedded {len(names)} enrolled system(s)")
        else:
            for system in into or enrol.measurable_systems(layout):
                table = enrol.measure_enrolment(cfg, system, args.sizes, args.repeats, args.seed)
                print(f"{system}: enrolment from n dev clips (mean over the dev-unseen systems)")
                mean = table[table["system"] == enrol.MEAN][["n", "recall", "false_attribution"]]
                print(mean.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
                print(f"written to {layout.system(system).enrolment}")
    except SourceTracingError as err:
        return report_error(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
