"""The ``nnvtv`` command line (typer + rich).

    nnvtv find                                   # toy-text, its default task, REINFORCE
    nnvtv find --model toy-text --task toy-successor --strategy greedy --budget 2000 --out runs/x
    nnvtv find --task my_pairs.json --out runs/mine  # a word-pair file of your own
    nnvtv evaluate --vector runs/x                 # re-evaluate a saved vector (its task travels with it)
    nnvtv learn --vector runs/x --steps 200 --out runs/x-learned   # train the vector's values (learned task vector)
    nnvtv learn --model toy-text --task toy-perm_a --layer 1       # or one residual layer's
    nnvtv models | nnvtv tasks [--model NAME]
    nnvtv train-toy text --out DIR

Every argument is checked before a model is loaded or run; a bad one, an unfit task, an
interruption or a folder that cannot be written ends with one line on stderr and exit code 2.
``--out`` folders are written through a temporary folder beside them and filled last with the
file that marks a finished run (``results.json``, ``compare.json``), so an interrupted run never
leaves a folder that reads as complete.
"""

from nnvtv.cli import listing, search  # noqa: F401  (each registers its commands on the app)
from nnvtv.cli.common import app

__all__ = ["app", "main"]

#: the order ``nnvtv --help`` lists the commands in
ORDER = ("find", "evaluate", "learn", "compare", "models", "tasks", "train-toy")
app.registered_commands.sort(key=lambda c: ORDER.index(c.name or c.callback.__name__.replace("_", "-")))


def main() -> None:  # pragma: no cover
    app()
