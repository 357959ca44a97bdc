"""`python -m attnbench.benchmarks [OPTIONS]` = `bench perf [OPTIONS]`."""

from attnbench.cli_perf import main

if __name__ == "__main__":
    main()
