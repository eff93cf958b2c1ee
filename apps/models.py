"""The Keras models ``train.py`` builds from a ``ModelPlan``: the tutorial's CNN for MNIST, a small CNN
for other images, an MLP for tables, and one branch per named input for multi-input datasets."""

from __future__ import annotations

import keras

from apps.plan import InputPlan, ModelPlan, output_units


def tutorial_cnn(input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10) -> keras.Model:
    """Conv32-Conv64-MaxPool-Dropout-Dense128-Dropout-Dense10, as in the tutorial (and Keras' mnist_cnn)."""
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Dropout(0.25),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(num_classes, activation="softmax"),
    ], name="tutorial_cnn")


def _branch(spec: InputPlan, tensor: keras.KerasTensor) -> keras.KerasTensor:
    """Features of one input: two small convolutions pooled globally for images, flattened and
    batch-normalised for everything else (table columns come in their own units, unscaled)."""
    if spec.image:
        hidden = keras.layers.Conv2D(16, 3, activation="relu")(tensor)
        hidden = keras.layers.MaxPooling2D(2)(hidden)
        hidden = keras.layers.Conv2D(32, 3, activation="relu")(hidden)
        return keras.layers.GlobalAveragePooling2D()(hidden)
    flat = keras.layers.Flatten()(tensor) if len(spec.shape) != 1 else tensor
    return keras.layers.BatchNormalization()(flat)


def build_model(plan: ModelPlan) -> keras.Model:
    """The model ``plan`` describes, its inputs named as the dataset's arrays (dict batches match by name)."""
    if plan.tutorial:
        return tutorial_cnn(plan.inputs[0].shape, plan.num_classes or 10)
    inputs = [keras.Input(spec.shape, name=spec.name) for spec in plan.inputs]
    branches = [_branch(spec, tensor) for spec, tensor in zip(plan.inputs, inputs)]
    hidden = branches[0] if len(branches) == 1 else keras.layers.Concatenate()(branches)
    hidden = keras.layers.Dense(64, activation="relu")(hidden)
    if plan.num_classes:
        output = keras.layers.Dense(plan.num_classes, activation="softmax")(hidden)
    else:
        output = keras.layers.Dense(output_units(plan))(hidden)
        if len(plan.target_shape) != 1:
            output = keras.layers.Reshape(plan.target_shape)(output)
    name = "small_cnn" if plan.inputs[0].image and len(inputs) == 1 else "streamload_model"
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, output, name=name)


def loss_and_metrics(plan: ModelPlan) -> tuple[str, list[str]]:
    """One-hot labels (the loaders' default) with accuracy, or mean squared error for float targets."""
    return ("categorical_crossentropy", ["accuracy"]) if plan.num_classes else ("mse", ["mae"])
