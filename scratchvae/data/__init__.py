"""The data layer: every data set becomes a :class:`Dataset` of flattened images in [0, 1].

One entry point, :func:`load_dataset`, takes

* ``"digits"``          the UCI handwritten digits (1,797 images of 8x8), embedded in the package;
* ``"mnist"``           MNIST, from the official IDX files (downloaded when absent);
* ``"fashion-mnist"``   Fashion-MNIST, the same way;
* a path                a ``.npy`` file (memory-mapped), a ``.npz`` file, a folder of IDX files,
                        or a folder of images.

Trainers read a data set through :meth:`Dataset.get_batch`, one batch of rows at a time, so a
memory-mapped ``.npy`` larger than RAM trains too. uint8 data is scaled by 1/255 (per batch when
memory-mapped); the digits' grey levels 0..16 are scaled by 1/16.

Where MNIST and Fashion-MNIST live: ``<root>/mnist/`` and ``<root>/fashion-mnist/``, or
``<root>`` itself when it holds one data set's files directly (told apart by md5), where
``<root>`` is the ``data_dir`` argument, else ``$SCRATCHVAE_DATA``, else
``$XDG_CACHE_HOME/scratchvae``, else ``~/.cache/scratchvae``. Each folder holds the four
official files (``train-images-idx3-ubyte.gz`` ... ``t10k-labels-idx1-ubyte.gz``, gzipped or
raw), or instead ``<name>-train.npz`` / ``<name>-test.npz`` with arrays ``x`` (N x 28 x 28
uint8) and ``y``. Missing IDX files are downloaded from the public mirrors (or ``base_url``, or
``$SCRATCHVAE_MNIST_MIRROR`` / ``$SCRATCHVAE_FASHION_MNIST_MIRROR``) and kept only when their md5
matches :data:`CHECKSUMS`; a failed download leaves no file and no new folder behind.

Every file is read whole when it is loaded (a memory-mapped ``.npy`` excepted: its size is
checked against its header), so a truncated or damaged file raises :class:`DataError` at load
time, with a one-line message naming the file, what is wrong and what to do.

The modules, one concept each:

* :mod:`.dataset`   the :class:`Dataset` type, validation of arrays;
* :mod:`.splits`    the train/validation split, binarization;
* :mod:`.idx`       the IDX format, md5 checks, the data root, what to download;
* :mod:`.download`  downloads: verified, atomic, clearing what killed ones left;
* :mod:`.images`    a folder of images, read as 8-bit grey levels;
* :mod:`.load`      :func:`load_dataset`: the embedded digits, MNIST, the user's own files.
"""

from .dataset import (
    BINARIZE_MODES,
    LIKELIHOODS,
    DataError,
    Dataset,
    LazyScaled,
    MissingFiles,
    as_dataset,
    check_n_features,
    dataset_from_array,
    validate_values,
)
from .idx import (
    CHECKSUMS,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    data_root,
    download_file,
    fetch_idx,
    idx_folder,
    read_idx,
)
from .load import DIGITS_SPLIT_SEED, DIGITS_TEST_SIZE, load_dataset, named_dataset
from .splits import binarize, train_val_split

__all__ = [
    "BINARIZE_MODES",
    "CHECKSUMS",
    "DIGITS_SPLIT_SEED",
    "DIGITS_TEST_SIZE",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "LIKELIHOODS",
    "DataError",
    "Dataset",
    "MissingFiles",
    "LazyScaled",
    "as_dataset",
    "binarize",
    "check_n_features",
    "data_root",
    "dataset_from_array",
    "download_file",
    "fetch_idx",
    "idx_folder",
    "load_dataset",
    "named_dataset",
    "read_idx",
    "train_val_split",
    "validate_values",
]
