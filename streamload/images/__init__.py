"""Read-time image decoding: stored image files (the bytes exactly as found in the folder) to the float32
batches ``keras.utils.image_dataset_from_directory`` gives, with optional Inception-style augmentation.

Keras-free (numpy, simplejpeg, Pillow); ``decode_batch`` is the whole interface. The intended hook
(issue 19 §2, not wired yet): the batch finisher receives the records of a batch, memoryviews into
the one buffer its byte ranges were read into, and calls ``decode_batch(records, sample_indices, epoch,
seed, options, threads)`` with the reader's ``ImageDecodeOptions``; ``StreamingGenerator``,
``BatchLoader`` and the tf.data path then pass the decoded batch on as they pass fixed arrays today.

Two modes:

* exact (``reduced_decode=False``, the default): JPEGs decoded at full size with TensorFlow's default
  IDCT (simplejpeg ``fastdct``), PNG/BMP/GIF by Pillow, then Keras' centred crop and TensorFlow's
  resize re-implemented bit for bit (:mod:`streamload.images.resize`): the output equals Keras' to float
  rounding (the tests compare with ``image_dataset_from_directory`` itself). Without simplejpeg,
  Pillow decodes JPEGs with the accurate IDCT, a few levels from Keras' fast one.
* reduced (``reduced_decode=True``): a JPEG whose region to resize is at least 2, 4 or 8 times the
  target is decoded at that DCT scale, which averages 2x2, 4x4 or 8x8 blocks where Keras' bilinear
  resize (no antialias) samples 2x2 pixels: smoother, and no longer Keras' pixels. The difference is
  measured by the tests against Keras (``tests/test_decoding_batch.py``) and is bounded there.

Random crops are drawn in full-size coordinates from the image's header, so they are the same in both
modes, and the JPEG is then decoded (at the scale the crop allows) and cropped: neither simplejpeg nor
Pillow decodes only a region, and the entropy decoding a crop cannot skip is most of a JPEG's cost.
"""

from .batch import decode_batch
from .options import ImageDecodeOptions

__all__ = ["ImageDecodeOptions", "decode_batch"]
