"""The run configuration of ``gradwise train``: schema, files, overrides and errors.

A run is described by one YAML or TOML file whose sections are the fields of
:class:`RunConfig`; every key has a default, so an empty file (or none) is the default
run. Errors are one line: ``unknown key 'optimiser' in 'train'; did you mean 'optimizer'?``.
"""

from gradwise.config._parse import (
    ConfigError,
    ConfigKey,
    apply_overrides,
    config_to_dict,
    dump_config,
    key_of,
    load_config,
    locate_in_file,
    parse_config,
    parse_value,
    read_file,
    total_steps,
    unknown_key_message,
    unknown_name_message,
)
from gradwise.config._schema import (
    AveragingConfig,
    CheckpointConfig,
    DataConfig,
    DistributedConfig,
    EarlyStoppingConfig,
    InitConfig,
    ModelConfig,
    MonitorConfig,
    RegularizationConfig,
    RunConfig,
    ScheduleConfig,
    WarmStartConfig,
)

__all__ = [
    "AveragingConfig",
    "CheckpointConfig",
    "ConfigError",
    "ConfigKey",
    "DataConfig",
    "DistributedConfig",
    "EarlyStoppingConfig",
    "InitConfig",
    "ModelConfig",
    "MonitorConfig",
    "RegularizationConfig",
    "RunConfig",
    "ScheduleConfig",
    "WarmStartConfig",
    "apply_overrides",
    "config_to_dict",
    "dump_config",
    "key_of",
    "load_config",
    "locate_in_file",
    "parse_config",
    "parse_value",
    "read_file",
    "total_steps",
    "unknown_key_message",
    "unknown_name_message",
]
