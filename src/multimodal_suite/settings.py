"""Project settings: configuration loading (with environment-variable resolvers) and hooks."""
import warnings

# Third-party deprecation chatter printed on every command, about APIs this project does not call itself.
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning)
warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method", category=UserWarning)

from kedro.config import OmegaConfigLoader

from multimodal_suite.config_resolvers import CONFIG_RESOLVERS
from multimodal_suite.hooks import OfflineModelsHook, ParameterValidationHook, TrackingStoreHook

# among tryfirst hooks the last registered runs first: parameters are checked before the tracking store is made
HOOKS = (TrackingStoreHook(), ParameterValidationHook(), OfflineModelsHook())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # oc.env and the typed env resolvers let conf/base honour the original PSS_* variables.
    "custom_resolvers": CONFIG_RESOLVERS,
    # conf/demo overrides single keys (a model spec, an epoch count) without restating whole sections.
    "merge_strategy": {"parameters": "soft", "catalog": "soft"},
}
