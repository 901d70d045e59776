#!/usr/bin/env python
"""The quickstart program: prints the config resolved from files, options and overrides."""


def main(cfg):
    print(f"Running main() with cfg={cfg}")


if __name__ == "__main__":
    from forgeml import app
    from forgeml.argparse import ArgumentParser

    parser = ArgumentParser()
    cfg = parser.parse_args()
    app.run(main, cfg)
