"""`python -m attnbench [COMMAND …]` = `bench [COMMAND …]`: the command line of the interpreter
that runs it (a virtual environment's plugins included, where another `bench` is first on PATH)."""

from attnbench.cli import main

if __name__ == "__main__":
    main()
