"""Every option of tuneforge, in pydantic models; the seeds' names are aliases of these."""

from tuneforge.config.data import CorpusConfig, CorpusItem, DataConfig
from tuneforge.config.distributed import DistributedConfig
from tuneforge.config.load import dump_run_config, load_run_config
from tuneforge.config.model import ModelConfig
from tuneforge.config.output import OutputConfig
from tuneforge.config.run import RunConfig
from tuneforge.config.train import MethodConfig, TrainingConfig

__all__ = [
    "CorpusConfig",
    "CorpusItem",
    "DataConfig",
    "DistributedConfig",
    "MethodConfig",
    "ModelConfig",
    "OutputConfig",
    "RunConfig",
    "TrainingConfig",
    "dump_run_config",
    "load_run_config",
]
