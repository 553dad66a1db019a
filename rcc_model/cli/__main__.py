import sys

try:
    from rcc_model.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command's modules import
    print("rcc: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
