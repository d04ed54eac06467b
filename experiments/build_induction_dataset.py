"""Seed entry point: ``python experiments/build_induction_dataset.py --models ...`` (see README)."""

from attendome.dataset.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
