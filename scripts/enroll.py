#!/usr/bin/env python
"""Enrol a new known system from a few clips into every trained system with embeddings, no retraining.

    python scripts/enroll.py --config X --add NAME clip.wav more_clips/      # enrol (--systems aasist,ge2e to choose)
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
    from sourcetracing.cli import (
        ListOption,
        exp_config,
        exp_parser,
        parse_command,
        positive_count,
        report_error,
        split_overrides,
    )
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


# flags this script once had, and what they are now (--system is a trained system in every script)
RENAMED = {
    "--system": "--add NAME (the new system's name; --systems chooses the trained systems)",
    "--into": "--systems",
}


def parser():
    parser = exp_parser(
        "enroll.py", enrol.__doc__, "clips or folders to enrol from (with --add); key=value overrides too"
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--add",
        default=None,
        metavar="NAME",
        help="enrol a new system (synthesizer) of this name from the clips",
    )
    action.add_argument("--remove", default=None, metavar="NAME", help="remove an enrolled system")
    action.add_argument("--list", action="store_true", help="list the enrolled systems")
    action.add_argument(
        "--refresh", action="store_true", help="re-embed the recorded clips of every enrolled system"
    )
    action.add_argument("--measure", action="store_true", help="measure enrolment on the dev-unseen systems")
    parser.add_argument(
        "--systems",
        action=ListOption,
        default=None,
        metavar="SYSTEM",
        help="trained systems to enrol into or measure, comma-separated (default: every eligible one)",
    )
    parser.add_argument("--replace", action="store_true", help="re-enrol a system that is enrolled already")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda (default: the config's)")
    parser.add_argument(
        "--sizes",
        action=ListOption,
        item=positive_count,
        default=list(enrol.SIZES),
        metavar="N",
        help="--measure: enrolment sizes n, comma-separated (default 1,3,5,10)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="--measure: seeded draws per system and n")
    parser.add_argument("--seed", type=int, default=0, help="--measure: seed of the draws")
    return parser


def main(argv: list[str] | None = None) -> int:
    from sourcetracing.errors import DataError, SourceTracingError
    from sourcetracing.layout import ExperimentLayout

    argv = list(sys.argv[1:] if argv is None else argv)
    for old, new in RENAMED.items():
        if any(a == old or a.startswith(old + "=") for a in argv):
            print(f"enroll.py: error: {old} is now {new}", file=sys.stderr)
            return 2
    command = parser()
    args = parse_command(command, argv, intermixed=True)  # clips may come before or after the options
    inputs, overrides = split_overrides(args.inputs)
    if inputs and args.add is None and not args.print_config:
        command.error(f"clips are enrolled with --add NAME (got {', '.join(inputs[:3])} without it)")
    into = args.systems
    try:
        cfg = exp_config(args, overrides)
        layout = ExperimentLayout.of(cfg)
        if args.add is not None:
            if not inputs:
                raise DataError("give the clips (files or folders) to enrol the system from")
            entry = enrol.enrol(cfg, args.add, inputs, into, args.replace, args.device)
            into_text = ", ".join(f"{s} ({p['n_clips']} clips)" for s, p in entry["into"].items())
            print(f"enrolled '{args.add}' into {into_text}; record in {layout.enrolled}")
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
