"""What both hooks share: their command line, the packages the files belong to, the report."""

from __future__ import annotations

import argparse
import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from safe_build_hooks.packages import owning_packages

# the problems found in one package, each a block of text; none: it passed
Check = Callable[[Path, argparse.Namespace], list[str]]


class Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line: what, where, what to do."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}, in the hook's args; see {self.prog} --help\n")


def parser(prog: str, description: str) -> Parser:
    made = Parser(prog=prog, description=description)
    made.add_argument("filenames", nargs="*", help="changed files (pre-commit passes them)")
    return made


def run(options: argparse.Namespace, check: Check) -> int:
    """Check every package that owns one of the files; report each as passed or failed."""
    root = Path.cwd()
    failed = 0
    for package in owning_packages(options.filenames, root):
        problems = check(package, options)
        name = os.path.relpath(package, root)
        print(f"{name}: {'failed' if problems else 'passed'}")
        for problem in problems:
            print(textwrap.indent(problem.rstrip("\n"), "    "))
        failed += bool(problems)
    return 1 if failed else 0
