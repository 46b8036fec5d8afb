"""``python -m mimetic …``: the same CLI as the ``mimetic`` command (``accelerate launch -m mimetic`` uses it)."""

from mimetic.frontends.cli import main

main()
