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
