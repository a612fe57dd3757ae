"""What a data set's labels mean: the class names of Fashion-MNIST, for legends.

MNIST's and the digits' labels are the digits themselves (0-9) and need no names; a user's own
data set's labels are shown as they are.
"""

from __future__ import annotations

__all__ = ["FASHION_MNIST_CLASSES", "class_names"]

#: Fashion-MNIST's labels 0..9 (Xiao, Rasul and Vollgraf 2017, the data set's README).
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_CLASS_NAMES = {"fashion-mnist": FASHION_MNIST_CLASSES}


def class_names(name: str) -> tuple[str, ...] | None:
    """The names of label 0, 1, ... of the data set called ``name`` (a :class:`Dataset`'s
    ``name``, e.g. ``"fashion-mnist"``), or None when its labels are their own names (MNIST's
    and the digits' digits, a user's labels)."""
    return _CLASS_NAMES.get(name)
