import sys

try:
    from lightship.cli import run
except KeyboardInterrupt:  # Ctrl-C while Python loads the CLI: the same line and code as later
    print("lightship: interrupted", file=sys.stderr)
    sys.exit(130)

run()
