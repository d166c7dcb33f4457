"""`python -m mmf.train`: the training command line. The loop itself is `mmf.training.trainer`."""
from mmf.training.trainer import main

if __name__ == "__main__":
    raise SystemExit(main())
