"""``python -m evoforge.bench``: the ``evoforge bench`` commands on their own, without the rest of the CLI.

The suite runs each row this way (``python -m evoforge.bench evolve ...``), so that a row's workers, compiles
and GPU memory end with its process; a user may run it the same way.
"""

from evoforge.bench import app

app(prog_name="evoforge bench")
