"""``python -m service`` and ``rnnlm serve``: start uvicorn on the app, settings from the environment.

Command-line options (``--host``, ``--port``, ``--model-dir``) override ``RNNLM_*`` variables.

The models are loaded before uvicorn starts: a missing, truncated or tampered checkpoint, a
vocabulary that does not match its weights or a CUDA device that does not exist ends the process
with one line on stderr and exit status 1. On SIGTERM (or Ctrl-C) the server stops accepting,
lets in-flight requests and streams finish for ``RNNLM_SHUTDOWN_GRACE_S``, ends what is left
cleanly (service/guard.py), and exits 0. Connections are capped and their request headers and
bodies timed (service/server.py); the open-file limit is raised to its hard limit first.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:
    import uvicorn

    from .guard import Drain
    from .server import ConnectionLimits, ConnectionTracker
    from .settings import Settings


def serve(host: str | None = None, port: int | None = None, model_dirs: Sequence[str] | None = None) -> int:
    import uvicorn
    from sse_starlette.sse import AppStatus

    from .app import create_app, preload
    from .logs import configure_logging
    from .server import ConnectionTracker, PerConnectionWarnings, protocol_class
    from .settings import Settings
    from .startup import StartupError

    overrides: dict[str, Any] = {
        "host": host,
        "port": port,
        "model_dirs": list(model_dirs) if model_dirs else None,
    }
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        settings = Settings(**given)
    except ValidationError as e:
        problems = "; ".join(_problem(err, given) for err in e.errors())
        print(f"error: invalid settings: {problems}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    try:
        preload(app)
    except StartupError as e:
        print(f"error: cannot start: {e}", file=sys.stderr)
        return 1
    # Streams stay open through the grace period and are then ended with a final event by the
    # service's own drain, instead of being cut at the signal by sse-starlette.
    AppStatus.disable_automatic_graceful_drain()
    tracker = ConnectionTracker(_connection_limits(settings), registry=app.state.metrics.registry)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,
        access_log=False,  # service/logs.py and context.py do both
        timeout_keep_alive=settings.keep_alive_s,
        # uvicorn declares int | None but passes it to asyncio.wait_for, which takes a float
        timeout_graceful_shutdown=settings.shutdown_grace_s + 5,  # type: ignore[arg-type]
        http=protocol_class(tracker),  # the cap and the header/body deadlines (service/server.py)
    )  # a backstop
    logging.getLogger("uvicorn.error").addFilter(PerConnectionWarnings())
    server = _draining_server(config, app.state.drain, tracker)
    for sig in (signal.SIGTERM, signal.SIGINT):  # uvicorn re-raises the signal once it has shut down
        signal.signal(sig, _after_shutdown)
    server.run()
    return 0 if server.started else 1


# the command-line option of each setting that has one (service/options.py)
FLAGS = {"host": "--host", "port": "--port", "model_dirs": "--model-dir"}


def _problem(err: Any, given: dict[str, Any]) -> str:
    """One setting's problem; a check across settings (no location) names them in its message."""
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{_setting_name(err['loc'], given)}: {message}" if err["loc"] else message


def _setting_name(loc: tuple, given: dict[str, Any]) -> str:
    """What the user typed for the setting at ``loc``: its option when given on the command line,
    else its environment variable."""
    name = str(loc[0]) if loc else ""
    if name in given and name in FLAGS:
        return FLAGS[name]
    return f"RNNLM_{'_'.join(map(str, loc)).upper()}"


def _after_shutdown(sig: int, frame: FrameType | None) -> None:
    """The signal uvicorn re-raises after a graceful shutdown: already handled, so exit normally."""


def _connection_limits(settings: Settings) -> ConnectionLimits:
    """The connection limits in force: the open-file limit raised to its hard limit, the cap below it."""
    from .server import ConnectionLimits, connection_cap, raise_nofile_limit

    nofile = raise_nofile_limit()
    cap = connection_cap(settings.max_connections, nofile)
    if cap < settings.max_connections:
        logging.getLogger("rnnlm.service").warning(
            "RNNLM_MAX_CONNECTIONS lowered from %d to %d: the process may open %d files",
            settings.max_connections,
            cap,
            nofile,
        )
    return ConnectionLimits(
        max_connections=cap,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        send_buffer_bytes=settings.send_buffer_bytes,
    )


def _draining_server(config: uvicorn.Config, drain: Drain, tracker: ConnectionTracker) -> uvicorn.Server:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            # a failed accept() (out of file descriptors) is counted, and logged at most once in a while
            asyncio.get_running_loop().set_exception_handler(tracker.exception_handler)
            await super().startup(sockets)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            drain.begin_threadsafe()  # the grace period starts now
            super().handle_exit(sig, frame)

    return DrainingServer(config)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from .options import add_serve_arguments  # one set of options for both front doors

    parser = argparse.ArgumentParser(prog="python -m service", description="Start the rnnlm HTTP service.")
    add_serve_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return serve(host=args.host, port=args.port, model_dirs=args.model_dir)


if __name__ == "__main__":
    raise SystemExit(main())
