"""Datasets as uint8 tensors on the device, batched augmentation, mixup and cutmix.

The training loop uses :func:`load_dataset` and the returned object's ``info``, ``to``,
``steps_per_epoch``, ``train_batches`` and ``test_batches``; see :mod:`lightship.data.tensor`
for the exact epoch order and how ``start``/``rank``/``world`` slice it.
"""

from lightship.data.augment import Augment
from lightship.data.folder import FolderData
from lightship.data.info import DatasetInfo
from lightship.data.load import Data, describe_dataset, list_datasets, load_data, load_dataset
from lightship.data.mix import cutmix, mixup
from lightship.data.tensor import TensorData

__all__ = ["Augment", "Data", "DatasetInfo", "FolderData", "TensorData", "cutmix",
           "describe_dataset", "list_datasets", "load_data", "load_dataset", "mixup"]
