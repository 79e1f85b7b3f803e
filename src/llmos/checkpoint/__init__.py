"""The one model format (a Hugging Face-compatible folder + llmos.json), import and export."""

from llmos.checkpoint.convert import export_hf, import_model, load_gguf
from llmos.checkpoint.folder import Pretrained, load_pretrained, read_config, save_pretrained
from llmos.checkpoint.hf_format import config_from_hf, config_to_hf, state_dict_from_hf, state_dict_to_hf

__all__ = ["Pretrained", "config_from_hf", "config_to_hf", "export_hf", "import_model", "load_gguf",
           "load_pretrained", "read_config", "save_pretrained", "state_dict_from_hf", "state_dict_to_hf"]
