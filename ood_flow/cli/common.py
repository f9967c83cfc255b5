"""What every subcommand shares: error handling, output streams, progress bars.

Data goes to stdout (a table or ``--json``); messages and progress go to stderr.
Exit codes: 0 success, 1 runtime error, 2 usage error, 3 a requested gate not met.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import logging
import os
import shlex
import signal
import sys
import warnings
from typing import Any, Callable

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ood_flow import jsontext
from ood_flow.cli import help_page
from ood_flow.environment import default_workers
from ood_flow.errors import GateFailed, OodflowError, UsageError

state = {"debug": False, "signal": None}


def lead() -> bool:
    """Whether this process speaks: the only one, or rank 0 of a torchrun job (the others stay quiet
    but for their errors)."""
    return os.environ.get("RANK", "0") == "0"


def _terminated(signum, frame) -> None:
    state["signal"] = "SIGTERM"
    raise KeyboardInterrupt  # unwinds like Ctrl-C: temporary files are removed, saved files stay whole


def usage_error(exc) -> int:
    """Print a command-line usage error as one line, ``error: ... (see 'oodflow CMD --help')``; returns its exit
    code. A command given without arguments shows its help instead, as before."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        exc.show()
        return exc.exit_code
    command = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "oodflow"
    text = " ".join(exc.format_message().split())
    sys.stderr.write(f"error: {text} (see '{command} --help')\n")
    return exc.exit_code


def ignore_stop_signals() -> None:
    """Once a command has finished and its exit code is decided, SIGINT and SIGTERM are ignored while
    Python shuts down: torch's finalizers take a moment, and a Ctrl-C then printed a traceback."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def catch_sigterm() -> None:
    """Treat SIGTERM (schedulers, CI, ``kill``) like Ctrl-C; the exit code is then 143 instead of 130."""
    signal.signal(signal.SIGTERM, _terminated)


def stderr() -> Console:
    """A console on the current stderr (looked up per call so tests can capture it). Without rich markup, as
    :func:`stdout`'s: what it prints names paths, sources and groups, and a ``[...]`` in one of them
    (``x [limit 5]``, a folder ``run[2]``) is text, never a style."""
    return Console(file=sys.stderr, soft_wrap=True, markup=False)


def stdout() -> Console:
    """A console on stdout. Tables fit the terminal's width, or ``$COLUMNS``, or 80 columns when piped (their
    cells wrap; ``--json`` is the format for machines); lines of text are never broken. Under torchrun only
    rank 0 prints data (the other ranks' consoles discard it)."""
    if not lead():
        return Console(file=io.StringIO(), markup=False)
    return Console(file=sys.stdout, soft_wrap=True, markup=False)


def message(text: str, quiet: bool = False) -> None:
    """A log line on stderr."""
    if not quiet and lead():
        stderr().print(text, highlight=False)


def print_json(obj: Any) -> None:
    """Machine-readable output on stdout (one JSON document); rank 0 only under torchrun."""
    if not lead():
        return
    sys.stdout.write(jsontext.dumps(obj, indent=2) + "\n")


def print_tsv(lines: list[str]) -> None:
    """Data rows on stdout, tab-separated, a header first (fields made with :func:`tsv_field`); rank 0 only under
    torchrun."""
    if lead():
        sys.stdout.write("\n".join(lines) + "\n")


def tsv_field(text: str) -> str:
    r"""``text`` as one field of a tab-separated line: backslash, tab, newline and carriage return written as
    ``\\``, ``\t``, ``\n`` and ``\r`` (the escapes of linear TSV), so that a file name holding a tab or a newline
    can neither add a column nor split a row."""
    return text.translate(_TSV_ESCAPES)


_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def fail(msg: str, code: int = 1) -> None:
    """Print one line ``error: msg`` on stderr and exit with ``code``."""
    sys.stderr.write(f"error: {msg}\n")
    _flush_or_drop_stdout()
    raise typer.Exit(code)


def _flush_or_drop_stdout() -> None:
    """Flush standard output before an exit whose code is decided; where it cannot take the rest (its reader has
    gone, its disk is full), point it at the null device, so that the interpreter's own flush at exit neither
    fails again (exit 120 with "Exception ignored ...") nor changes the decided code. Buffered output is what a
    shell sees unless PYTHONUNBUFFERED is set."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, sys.stdout.fileno())
            os.close(null)
        except (OSError, ValueError):  # not a real file (a test's captured stream): nothing left to protect
            pass


def one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def handle_errors(fn: Callable) -> Callable:
    """Turn exceptions into one line on stderr and an exit code (``--debug`` re-raises)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with core_notes(kwargs.get("quiet", False)):
                result = fn(*args, **kwargs)
            sys.stdout.flush()  # a full or closed standard output fails here, handled below, not at the exit
            return result
        except (typer.Exit, typer.Abort):
            _flush_or_drop_stdout()
            raise
        except BrokenPipeError:  # the reader of standard output left (`| head`): stop quietly, as Unix tools do
            if state["debug"]:
                raise
            _flush_or_drop_stdout()
            raise typer.Exit(128 + signal.SIGPIPE) from None
        except OodflowError as exc:
            if state["debug"]:
                raise
            fail(" ".join(exc.cli_message().split()), exc.exit_code)
        except ValueError as exc:  # the core's argument checks: the message names the value at fault
            if state["debug"]:
                raise
            fail(one_line(exc))
        except KeyboardInterrupt:
            if state["debug"]:
                raise
            terminated = state["signal"] == "SIGTERM"
            fail("terminated (SIGTERM)" if terminated else "interrupted", 143 if terminated else 130)
        except Exception as exc:  # anything unforeseen still ends as one line
            if state["debug"]:
                raise
            fail(_unforeseen(exc))

    return wrapper


def _unforeseen(exc: Exception) -> str:
    """The line for an exception no command turned into a message of its own: where the system refused a read or
    write (an OSError with an errno: a full disk, a closed or full standard output), the path and the reason;
    else the exception's class and text, with the hint to ``--debug`` (h5py and others raise OSError too)."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else f"{exc.strerror} (errno {exc.errno})"
    return f"{type(exc).__name__}: {one_line(exc)} (run with --debug for the traceback)"


class _NoteHandler(logging.Handler):
    """The core's log records (e.g. a stale temporary file removed) as ``note: ...`` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(f"note: {record.getMessage()}\n")


@contextlib.contextmanager
def core_notes(quiet: bool):
    """Show what the core logs on the ``ood_flow`` logger while a command runs (nothing with ``--quiet``)."""
    logger, handler = logging.getLogger("ood_flow"), _NoteHandler(logging.INFO)
    if quiet:
        handler.setLevel(logging.CRITICAL + 1)
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def plain_logger(quiet: bool = False, every: float = 30.0) -> Callable[[str], None]:
    """When stderr is not a terminal (CI logs, ``2> file``) progress bars stay silent until the end;
    this prints a plain line at most every ``every`` seconds instead (nothing on a terminal)."""
    import time

    last = [time.monotonic()]

    def log(text: str) -> None:
        if quiet or sys.stderr.isatty() or time.monotonic() - last[0] < every:
            return
        last[0] = time.monotonic()
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    return log


def progress_bar(quiet: bool = False) -> Progress:
    """A rich progress bar on stderr; disabled by ``--quiet``."""
    return Progress(
        TextColumn("{task.description}", style="bold", markup=False),  # descriptions and infos name sources
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}", markup=False),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr(),
        disable=quiet,
        transient=False,
    )


class Reporter:
    """Progress and messages of one core call on stderr, for its ``progress`` and ``on_message`` callbacks.

    The bar starts at the first progress report, so an error raised before any work is the only
    line on stderr; messages print above a running bar.
    """

    def __init__(self, what: str, quiet: bool = False, info: str = ""):
        self.what, self.quiet, self.info = what, quiet or not lead(), info
        self.bar: Progress | None = None
        self.stage: str | None = None

    def progress(self, done: int, total: int, info: str | None = None, what: str | None = None) -> None:
        """Advance the bar; ``what`` names a stage of the work (e.g. ``embed``, then ``train``): each gets its own
        bar, the earlier ones stay shown."""
        what = what or self.what
        if self.bar is None:
            self.bar = progress_bar(self.quiet)
            self.bar.start()
        if what != self.stage:
            self.stage, self.task = what, self.bar.add_task(what, total=total, info=self.info)
        self.bar.update(self.task, completed=done, total=total, info=self.info if info is None else info)

    def message(self, text: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.console.print(text, highlight=False)
        else:
            message(text)

    def __enter__(self) -> "Reporter":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


def run(call: Callable[[], Any], show: Callable[[Any], None], reporter: Reporter | None = None) -> Any:
    """``show(call())``, with ``reporter``'s bar around the call; when a gate fails (exit 3), what the
    call computed is shown first."""
    try:
        with reporter or contextlib.nullcontext():
            result = call()
    except GateFailed as exc:
        if exc.result is not None:
            show(exc.result)
        raise
    show(result)
    return result


def unwrap(doc: str | None) -> str:
    """A docstring as help text: paragraphs kept, the line breaks inside them dropped, so that rich
    wraps the text to the terminal's width."""
    paragraphs = inspect.cleandoc(doc or "").split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def command(app: typer.Typer, fn: Callable, name: str | None = None, epilog: str | None = None) -> None:
    """Register ``fn`` as subcommand ``name`` (default: its own name): one-line errors, wrapped help that
    fits the terminal (:mod:`ood_flow.cli.help_page`), ``-h`` as well as ``--help``; ``epilog`` ends the page."""
    app.command(name or fn.__name__, help=unwrap(fn.__doc__), epilog=epilog, cls=help_page.Command,
                context_settings=help_page.CONTEXT)(handle_errors(fn))


def same_command(ctx: typer.Context, *extra: str) -> str:
    """The command being run, as a shell would take it, plus ``extra`` words (e.g. ``--resume``) it lacks.

    Built from what was given on the command line (not defaults or environment variables), so it
    reruns exactly this command; ``ctx`` is the command's ``typer.Context``.
    """
    words = ["oodflow", *ctx.command_path.split()[1:]]
    for param in ctx.command.params:
        if getattr(ctx.get_parameter_source(param.name), "name", None) != "COMMANDLINE":
            continue
        value = ctx.params[param.name]
        values = value if isinstance(value, (list, tuple)) else [value]
        if param.param_type_name == "argument":
            words += [str(v) for v in values]
        elif getattr(param, "is_flag", False):
            words += [param.opts[0]] if value else []
        else:
            words += [w for v in values for w in (param.opts[0], str(v))]
    words += [w for w in extra if w not in words]
    return shlex.join(words)


def duration(seconds: float) -> str:
    """``4.2s``, ``3m05s``, ``2h07m``, ``3d04h``."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, mins = divmod(minutes, 60)
    if hours >= 24:
        return f"{hours // 24}d{hours % 24:02d}h"
    if hours:
        return f"{hours}h{mins:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def quiet_compiler_warnings() -> None:
    """Hide what torch's compiler says that no user of ``train --compile`` can act on; every other warning and log
    line still shows: the deprecation warnings raised inside it (torch 2.14's inductor calls its own deprecated
    ``torch._prims_common.check`` on every lowering, a FutureWarning per call), and the line torch's C++-extension
    module logs when imported on a machine with a CUDA toolkit's folder but no CUDA device (the compiler imports it
    to build CPU kernels)."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\._inductor(\.|$)")
    extensions = logging.getLogger("torch.utils.cpp_extension")
    if not any(isinstance(f, _NoCudaRuntimeLine) for f in extensions.filters):
        extensions.addFilter(_NoCudaRuntimeLine())


class _NoCudaRuntimeLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


def check_environment() -> None:
    """Environment settings that commands read late, checked before any command runs: a bad one fails every
    command alike (one line, exit 2), not only those that happen to read it."""
    try:
        default_workers()  # $OODFLOW_WORKERS
    except UsageError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(exc.exit_code)
