"""Project hooks."""
from __future__ import annotations

import logging
import os

import click
from kedro.framework.hooks import hook_impl

from multimodal_suite.common.params import ParamsError

logger = logging.getLogger(__name__)


class InvalidParametersError(ParamsError, click.ClickException):
    """A parameter tree that does not fit the typed sections; the CLI prints its message alone, no traceback."""

    def __init__(self, message: str) -> None:
        click.ClickException.__init__(self, message)


class ParameterValidationHook:
    """Checks the run's whole parameter tree against the typed sections before anything else uses it.

    A misspelled key (``--params pss.train.epoch=3``), an unknown section (``pss.trian``) or a value of the wrong
    type stops the run at once with one error naming the key and the valid ones, instead of a silent default.
    """

    @hook_impl(tryfirst=True)
    def after_context_created(self, context) -> None:
        # Imported when a context exists: the sections load torch, which commands without a context never need.
        from multimodal_suite.parameter_sections import validate_parameters

        try:
            validate_parameters(context.params)
        except ParamsError as error:
            raise InvalidParametersError(str(error)) from None


class OfflineModelsHook:
    """Honours the ``hub_offline`` parameter: with it set, no model loader ever waits on the Hugging Face hub.

    The demo environment sets it, so ``kedro run --env demo`` works offline whatever the user's shell says
    (an offline hub lookup otherwise spends ~48 s in network retries before failing).
    """

    @hook_impl
    def after_context_created(self, context) -> None:
        if context.params.get("hub_offline", False):
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            logger.info("hub_offline: models load from local files only (HF_HUB_OFFLINE=1)")


class TrackingStoreHook:
    """Creates the sqlite MLflow store and the run's experiment once, under a lock file beside the database,
    before kedro-mlflow opens them.

    Without it, two ``kedro run``s started together on a fresh checkout both find no tables, both run MLflow's
    schema migrations and one dies (``duplicate column name``), or both create the experiment and one fails.
    Later runs find everything in place and only pay for taking the lock. Other tracking URIs (a server, a
    database that serialises its own migrations) are left to kedro-mlflow.
    """

    @hook_impl(tryfirst=True)
    def after_context_created(self, context) -> None:
        import mlflow
        from kedro.config import MissingConfigException

        if mlflow.active_run():  # kedro-mlflow then takes its configuration from the active run
            return
        patterns = context.config_loader.config_patterns
        if "mlflow" not in patterns:  # kedro-mlflow registers the same patterns when its own hook runs
            patterns["mlflow"] = ["mlflow*", "mlflow*/**", "**/mlflow*"]
        try:
            conf = context.config_loader["mlflow"] or {}
        except MissingConfigException:
            return
        tracking_uri = (conf.get("server") or {}).get("mlflow_tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
        experiment = (conf.get("tracking") or {}).get("experiment") or {}
        kwargs = experiment.get("create_experiment_kwargs") or {}
        if tracking_uri:
            self.ensure_sqlite_store(
                tracking_uri,
                experiment.get("name") or context._package_name,
                artifact_location=self.absolute_uri(kwargs.get("artifact_location"), context.project_path),
                tags=kwargs.get("tags"),
            )

    @staticmethod
    def ensure_sqlite_store(
        tracking_uri: str, experiment_name: str, artifact_location: str | None = None, tags: dict | None = None
    ) -> bool:
        """Create or migrate the sqlite store at ``tracking_uri`` and create ``experiment_name`` in it, holding
        ``.<database name>.lock`` beside the database; False (nothing done) for a URI that is not a sqlite file.
        """
        from pathlib import Path

        import fsspec
        from mlflow.tracking import MlflowClient
        from sqlalchemy.engine import make_url

        from multimodal_suite.common.locks import FileLock

        if not tracking_uri.startswith("sqlite:"):
            return False
        database = make_url(tracking_uri).database
        if not database or database == ":memory:":
            return False
        path = Path(database).absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(fsspec.filesystem("file"), str(path.with_name(f".{path.name}.lock"))):
            # the client's store is cached per URI, so kedro-mlflow reuses the one initialised here
            client = MlflowClient(tracking_uri=tracking_uri)
            if client.get_experiment_by_name(experiment_name) is None:
                client.create_experiment(experiment_name, artifact_location=artifact_location, tags=tags)
        return True

    @staticmethod
    def absolute_uri(location: str | None, project_path) -> str | None:
        """An artifact location as kedro-mlflow passes it to MLflow: a relative path made absolute in the
        project, a path turned into a ``file://`` URI, any other URI unchanged."""
        from pathlib import Path, PurePath
        from urllib.parse import urlparse

        if location is None:
            return None
        if PurePath(location).is_absolute():
            return Path(location).as_uri()
        if urlparse(location).scheme == "":
            return (Path(project_path) / location).as_uri()
        return location
