#!/usr/bin/env python
"""Compare the systems of an experiment (AASIST/REFD, GE2E, MFCC reference) in one table."""

import sys

from sourcetracing.summary import main

if __name__ == "__main__":
    sys.exit(main())
