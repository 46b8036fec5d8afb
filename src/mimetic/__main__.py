"""``python -m mimetic …``: the same CLI as the ``mimetic`` command (``accelerate launch -m mimetic`` uses it)."""

from .cli import main

main()
