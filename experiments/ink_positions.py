"""Where the ink of an MNIST digit lies in the 784-step pixel sequence.

    python experiments/ink_positions.py [DATA_DIR]        (default ./data)

prints, over the test images read in reading order (row by row, one pixel per
step), the median number of steps between a digit's last non-zero pixel and the
end of the sequence, and between its first non-zero pixel and the end: how far
back a readout of the last step has to reach (experiments/long_sequences.md).
"""

from __future__ import annotations

import sys

import numpy as np

from snn_lstm.data.idx import MNIST, load_split


def steps_before_end(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For images [N, H, W]: the steps from each one's last and from its first
    non-zero pixel to the end of its H * W steps (0: the very last step)."""
    ink = images.reshape(len(images), -1) > 0
    steps = ink.shape[1]
    last = steps - 1 - np.argmax(ink[:, ::-1], axis=1)
    first = np.argmax(ink, axis=1)
    return steps - 1 - last, steps - 1 - first


if __name__ == "__main__":
    images, _ = load_split(MNIST, sys.argv[1] if len(sys.argv) > 1 else "data", "test")
    after_last, after_first = steps_before_end(images)
    print(f"{len(images)} test images: the last ink a median {np.median(after_last):.0f} steps before the end, "
          f"the first {np.median(after_first):.0f}")
