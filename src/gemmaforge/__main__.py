"""`python -m gemmaforge`: the same CLI as the `gemmaforge` console script."""

from gemmaforge.cli import app

if __name__ == "__main__":
    app(prog_name="gemmaforge")
