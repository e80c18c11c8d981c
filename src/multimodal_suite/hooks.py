"""Project hooks."""
from __future__ import annotations

import logging
import os

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)


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
