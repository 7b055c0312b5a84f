"""The `fastreg` command: a thin dispatcher; each subcommand lives beside the code it drives.

    fastreg sandbox [--port N] [--data-dir DIR] [--config-out FILE]
    fastreg serialize NOTEBOOK.ipynb|MODULE.py -o DIR
    fastreg register-files DIR -p PROJECT -d DOMAIN ...
    fastreg quickstart

Each entry of ``COMMANDS`` names a module exposing ``add_arguments(parser)`` and
``run(args) -> int``; the module is imported only when its command runs, so
``fastreg --help`` stays fast.

Every failure is one line on stderr (what went wrong, what to do) and exit status 1; a usage
error is argparse's, with status 2; Ctrl-C is one line saying what it stopped and what was
registered, with status 130. An unexpected exception is a bug: one line too, unless
``FASTREG_TRACEBACK=1`` asks for its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

TRACEBACK_ENV = "FASTREG_TRACEBACK"  # set (to anything) to see the traceback of an unexpected error

COMMANDS = {
    "sandbox": ("fastreg_magic.sandbox.command", "run the embedded Flyte sandbox on loopback (foreground)"),
    "serialize": ("fastreg_magic.files", "serialize a notebook's %%flyte_fast cells or a module to protobuf files + archive"),
    "register-files": ("fastreg_magic.files", "register serialized protobuf files + archive"),
    "quickstart": ("fastreg_magic.quickstart", "start the embedded sandbox and run the quickstart end to end"),
}


# Commands whose work imports flytekit: it is imported first, keeping Ctrl-C ours (see main).
USES_FLYTEKIT = ("serialize", "register-files")
INTERRUPTED = 130  # the shell's status for a command ended by Ctrl-C (128 + SIGINT)


def interrupted(command: str, args, err: KeyboardInterrupt) -> str:
    """What Ctrl-C stopped, and the state it left, in one line."""
    from fastreg_magic.errors import Interrupted

    if command == "serialize":  # it writes DIR only once everything is serialized
        return f"interrupted: {args.output} was left as it was."
    if isinstance(err, Interrupted):  # it knows: the registration was completed, or may be incomplete
        return str(err)
    if command == "register-files":
        return ("interrupted before any Create of the release under way: it was not registered "
                "(the releases reported above were).")
    return "interrupted."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastreg", description="Fast registration of Flyte workflows.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        # argparse %-formats a command's help (not its description): `%%flyte_fast` must survive it.
        command_parser = sub.add_parser(name, help=help_text.replace("%", "%%"), description=help_text)
        command_parser.set_defaults(_module=module_name)
        # Arguments are added on demand (see main) to keep `fastreg --help` import-free.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if argv and argv[0] in COMMANDS:
        if argv[0] in USES_FLYTEKIT:
            try:
                from fastreg_magic import api

                api.import_flytekit_keeping_ctrl_c()  # first, before anything imports it with its Ctrl-C handler
            except KeyboardInterrupt:
                print(f"fastreg {argv[0]}: interrupted while starting: nothing was done.", file=sys.stderr)
                return INTERRUPTED
        module = importlib.import_module(COMMANDS[argv[0]][0])
        sub = argparse.ArgumentParser(prog=f"fastreg {argv[0]}", description=COMMANDS[argv[0]][1])
        add = getattr(module, f"add_{argv[0].replace('-', '_')}_arguments", None) or module.add_arguments
        add(sub)
        args = sub.parse_args(argv[1:])
        args.command = argv[0]
        runner = getattr(module, f"run_{argv[0].replace('-', '_')}", None) or module.run
        from fastreg_magic.errors import FastRegError

        try:
            return int(runner(args) or 0)
        except FastRegError as err:
            print(f"fastreg {argv[0]}: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt as err:
            print(f"fastreg {argv[0]}: {interrupted(argv[0], args, err)}", file=sys.stderr)
            return INTERRUPTED
        except Exception as err:  # a bug of ours: still one line, with the way to the traceback
            if os.environ.get(TRACEBACK_ENV):
                raise
            text = " ".join(str(err).split())
            print(f"fastreg {argv[0]}: unexpected {type(err).__name__}{': ' + text if text else ''}. "
                  f"This is a bug in fastreg: re-run with {TRACEBACK_ENV}=1 for the traceback, and report it.",
                  file=sys.stderr)
            return 1
    parser.parse_args(argv)  # prints usage / errors
    return 2


if __name__ == "__main__":
    sys.exit(main())
