import sys
from importlib.resources import files

from greet import greeting


def main() -> None:
    template = files("greet_cli").joinpath("templates/line.txt").read_text(encoding="utf-8")
    print(template.format(greeting(sys.argv[1] if len(sys.argv) > 1 else "world")))
