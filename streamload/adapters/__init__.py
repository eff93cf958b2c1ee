"""The Keras and tf.data side, the only modules that import Keras or TensorFlow: ``StreamingGenerator``,
the callbacks, ``as_tf_dataset`` and the watch over Keras worker processes."""
