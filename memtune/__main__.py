"""``python -m memtune``: the same command line as the ``memtune`` script."""

from memtune.cli import main

if __name__ == "__main__":
    main()
