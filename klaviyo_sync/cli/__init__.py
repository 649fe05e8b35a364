"""The `klaviyo-sync` command line: parse options, configure logging, call one service.

Each group of commands lives in its own module and registers itself on :data:`cli`.
Known errors (:class:`KlaviyoSyncError`) become one readable line and the error's exit
code; a traceback only with ``-v``.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass, field
from typing import Any

import click
from sqlalchemy.engine import Engine

from klaviyo_sync import __version__, config, logconfig
from klaviyo_sync.app import App
from klaviyo_sync.exceptions import KlaviyoSyncError
from klaviyo_sync.gctune import tune_collector


@dataclass
class AppContext:
    """What every command gets: the settings path, verbosity, and the app's parts."""

    config_path: str | None
    verbose: int
    _settings: config.Settings | None = None
    _parts: App | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> config.Settings:
        if self._settings is None:
            self._settings = config.load(self.config_path)
            level = "debug" if self.verbose > 1 else self._settings.logging.level
            logconfig.configure(level, self._settings.logging.format,
                                self._settings.logging.mask_emails)
            logconfig.get_logger("klaviyo_sync.cli").info("settings_file",
                                                          path=self._settings.source)
        return self._settings

    @property
    def parts(self) -> App:
        """The wiring (app.py) on these settings: each part built on first use."""
        if self._parts is None:
            self._parts = App(self.settings)
        return self._parts

    def reading(self) -> App:
        """The parts for a read-only command: its state database must exist already."""
        self.state_engine(read_only=True)
        return self.parts

    def reading_lazily(self) -> App:
        """The parts for a command that reads when the state database exists and creates
        nothing when it does not (the parts' ``state_engine`` then raises
        StateMissingError, which the command may take as "nothing recorded yet")."""
        if self._parts is None:
            self._parts = App(self.settings, read_only=True)
        return self._parts

    def state_engine(self, read_only: bool = False) -> Engine:
        """The state database, refused if its schema is outdated or not ours. Created on
        first use, except by a ``read_only`` command, which creates nothing: a missing
        database is a StateMissingError (exit 3)."""
        if self._parts is None:
            self._parts = App(self.settings, read_only=read_only)
        return self._parts.state_engine

    def close(self) -> None:
        if self._parts is not None:
            self._parts.close()


pass_app = click.make_pass_decorator(AppContext)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", envvar="KLAVIYO_SYNC_CONFIG", metavar="PATH",
              help="Settings file (default ./settings.toml, then /etc/klaviyo-sync/settings.toml).")
@click.option("-v", "--verbose", count=True, help="Show tracebacks; -vv also logs at debug level.")
@click.version_option(__version__, prog_name="klaviyo-sync")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """Tail a business log and database into a durable queue and deliver it to Klaviyo."""
    app = AppContext(config_path=config_path, verbose=verbose)
    ctx.obj = app
    ctx.call_on_close(app.close)
    logconfig.configure("debug" if verbose > 1 else "info")


def main() -> None:
    """Console-script entry point."""
    tune_collector()
    verbose = any(a in ("-v", "-vv", "--verbose") for a in sys.argv[1:])
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KlaviyoSyncError as exc:
        if verbose:
            traceback.print_exc()
        click.echo(f"klaviyo-sync: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    else:
        sys.exit(0)


# Command modules register themselves on `cli` when imported.
from klaviyo_sync.cli import (  # noqa: E402,F401
    admin,
    business,
    catalog,
    consent,
    daemon,
    demo,
    ingest,
    privacy,
    profiles,
    queue,
    send,
)
