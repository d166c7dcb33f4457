"""`python -m mmf.scaling`: the scaling study's command line. The study is `mmf.experiments.scaling`."""
from mmf.experiments.scaling import main

if __name__ == "__main__":
    raise SystemExit(main())
