"""``python -m evoforge.cli``: the same command line as the ``evoforge`` console script.

It only calls ``evoforge.cli.main``; the commands are registered in ``evoforge/cli/__init__.py``. Scripts and
tests start the CLI this way so that they run the package of the Python they start, whatever is on PATH.
"""

from evoforge.cli import main

main()
