"""Shared by the benchmark scripts: an argument parser whose errors are one line on stderr and
exit code 2 (argparse's own prints its usage first: two or more lines)."""
import argparse
import sys


class Parser(argparse.ArgumentParser):
    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)

    def within(self, opt, value, lo, hi, unit=""):
        """The one-line error (exit 2) "opt value: must be lo-hi[unit]" unless lo <= value <= hi."""
        if not lo <= value <= hi:
            self.error(f"{opt} {value}: must be {lo}-{hi}{unit}")
