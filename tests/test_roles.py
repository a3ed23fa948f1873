"""The weight/bias rule and the walk over a model's trainable variables."""

import keras
import pytest

from keras_l1l2plus.roles import (
    BIAS,
    WEIGHT,
    is_normalization,
    owned_trainable_variables,
    regularizer_attributes,
    role,
)

L = keras.layers


@pytest.mark.parametrize(
    "layer,name,expected",
    [
        (L.Dense(2), "bias", BIAS),
        (L.Dense(2), "kernel", WEIGHT),
        (L.LSTMCell(2), "recurrent_kernel", WEIGHT),
        (L.SeparableConv2D(2, 2), "depthwise_kernel", WEIGHT),
        (L.Embedding(3, 2), "embeddings", WEIGHT),
        (L.Layer(), "output_bias", BIAS),
        (L.BatchNormalization(), "beta", BIAS),
        (L.BatchNormalization(), "gamma", WEIGHT),
        (L.Layer(), "beta", WEIGHT),  # only a normalization layer's beta is an offset
    ],
)
def test_role(layer, name, expected):
    assert role(layer, name) == expected


def test_normalization_layers():
    assert is_normalization(L.LayerNormalization())
    assert is_normalization(L.GroupNormalization(groups=1))
    assert not is_normalization(L.Dense(2))


def test_regularizer_attributes_exclude_activity():
    assert regularizer_attributes(L.Dense(2)) == {
        "kernel_regularizer": WEIGHT,
        "bias_regularizer": BIAS,
    }
    assert regularizer_attributes(L.MultiHeadAttention(2, 2)) == {
        "_kernel_regularizer": WEIGHT,
        "_bias_regularizer": BIAS,
    }


def test_owned_variables_once_each_with_their_creating_layer():
    shared = L.Dense(3, name="shared")
    inputs = keras.Input((3,))
    outputs = L.LSTM(2, name="lstm")(L.Reshape((1, 3))(shared(shared(inputs))))
    model = keras.Model(inputs, outputs)
    owned = [(o.layer.name, o.variable.path.split("/")[-1], o.role) for o in owned_trainable_variables(model)]
    assert owned == [
        ("shared", "kernel", WEIGHT),
        ("shared", "bias", BIAS),
        ("lstm_cell", "kernel", WEIGHT),
        ("lstm_cell", "recurrent_kernel", WEIGHT),
        ("lstm_cell", "bias", BIAS),
    ]
