"""Data sources: one grammar for every subcommand's SOURCE argument.

- :func:`load_source` turns a SOURCE (a folder or file of images, an array, HDF5 or
  CSV file, or a dataset ``NAME[:SPLIT]`` of :data:`DATASETS`) into a :class:`Dataset`:
  uint8 images ``(N, C, H, W)`` or float32 vectors ``(N, D)`` with ids and labels.
- :func:`open_source` opens the same SOURCE as a :class:`Source` that is read in fixed-size
  batches, image files decoded (and converted) per image in DataLoader workers.
- :func:`conform` checks a dataset against a model's input shape and converts it
  (resize, grayscale, rgb) where the caller allows.
- :func:`read_source`, :func:`open_with_options` and :func:`fit_to_model` do these for a command,
  with the shared :class:`SourceOptions`.
- :func:`default_data_root` is where named datasets live: ``--data-dir``, else
  ``$OODFLOW_DATA_DIR``, else ``~/.cache/oodflow``, in torchvision's layout.
"""

from ood_flow.data.conform import TrainedOn, conform
from ood_flow.data.dataset import Dataset
from ood_flow.data.download import default_data_root
from ood_flow.data.read import SourceOptions, fit_to_model, open_with_options, read_source
from ood_flow.data.registry import DATASETS, DatasetEntry
from ood_flow.data.source import load_source, open_source
from ood_flow.data.stream import Batch, Source

__all__ = ["DATASETS", "Batch", "Dataset", "DatasetEntry", "Source", "SourceOptions", "TrainedOn", "conform",
           "default_data_root", "fit_to_model", "load_source", "open_source", "open_with_options", "read_source"]
