"""``python -m perfsim``: the ``perfsim`` command."""

from perfsim.cli import main

if __name__ == "__main__":
    main()
