"""Read-time image decoding: stored image files (the bytes exactly as found in the folder) to the float32
batches ``keras.utils.image_dataset_from_directory`` gives, with optional Inception-style augmentation.

Keras-free (numpy, simplejpeg, OpenCV, Pillow); ``decode_batch`` is the whole interface: the read path
(:mod:`streamload.read.decoding`) hands it a batch's records, memoryviews into the one buffer their byte
ranges were read into, with the reader's ``ImageDecodeOptions``; ``StreamingGenerator``, ``BatchLoader``
and the tf.data path pass the decoded batch on as they pass fixed arrays.

Two modes:

* exact (the default without random crops): JPEGs decoded at full size with TensorFlow's default IDCT
  (simplejpeg ``fastdct``), PNG/BMP/GIF by Pillow, then Keras' centred crop and TensorFlow's resize:
  bilinear by OpenCV's kernel, within hundredths of a level (:mod:`.resize_opencv` says how close and
  why), or bit for bit by :mod:`.resize` without OpenCV; nearest bit for bit (the tests compare with
  ``image_dataset_from_directory`` itself). Without simplejpeg, Pillow decodes JPEGs with the accurate
  IDCT, a few levels from Keras' fast one.
* reduced (``reduced_decode=True``, the default with ``random_resized_crop``, which has no Keras pixels
  to match): a JPEG whose region to resize is at least 2, 4 or 8 times the
  target is decoded at that DCT scale, which averages 2x2, 4x4 or 8x8 blocks where Keras' bilinear
  resize (no antialias) samples 2x2 pixels: smoother, and no longer Keras' pixels. The difference is
  measured by the tests against Keras (``tests/test_images_batch.py``) and is bounded there.

Random crops are drawn in full-size coordinates from the image's header, so they are the same in both
modes, and the JPEG is then decoded (at the scale the crop allows) and cropped. Neither simplejpeg nor
Pillow decodes only a region; TurboJPEG does from libjpeg-turbo 3.0 on (PyTurboJPEG 2), but the system
library in this project's Ubuntu is 2.1, whose only crop is the lossless transform (PyTurboJPEG 1.x
``crop``). Timed by hand once (PyTurboJPEG 1.7 on libturbojpeg 2.1.5, 200 of the benchmark's photos, their
Inception crops covering 45% of the area on average), transform plus decode took 1.7x a full decode and
the transform alone more than one: it entropy-decodes the whole image and re-encodes the crop. And at
224x224 only about 1 crop in 18 of those photos is large enough for 1/2-scale decoding.
"""

from .batch import decode_batch
from .options import ImageDecodeOptions

__all__ = ["ImageDecodeOptions", "decode_batch"]
