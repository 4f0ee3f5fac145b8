"""Echo backend conformance through the preview1 front-end: every tensor type and a
range of shapes go in and come back byte for byte."""

from __future__ import annotations

import math
import os

import pytest
from conftest import F16, F32, F64, I32, I64, INVALID_ARGUMENT, SUCCESS, TOO_LARGE, U8, Probe

SIZES = {F16: 2, F32: 4, F64: 8, U8: 1, I32: 4, I64: 8}
SHAPES = [[1], [0], [5], [2, 3], [3, 0, 2], [2, 2, 2, 2], [1, 1, 1, 1, 1, 1, 1, 7], [256, 256]]


@pytest.mark.parametrize("type_code", sorted(SIZES))
@pytest.mark.parametrize("dims", SHAPES, ids=lambda dims: "x".join(map(str, dims)))
def test_round_trip(probe: Probe, type_code: int, dims: list[int]) -> None:
    data = os.urandom(math.prod(dims) * SIZES[type_code])
    context = probe.context("echo")
    assert probe.call("set_input", context, 0, probe.tensor(dims, type_code, data)) == SUCCESS
    assert probe.call("compute", context) == SUCCESS
    errno, output, reported = probe.output(context, size=max(len(data), 1))
    assert errno == SUCCESS and reported == len(data)
    assert output == data


def test_several_inputs_come_back_at_their_own_index(probe: Probe) -> None:
    context = probe.context("echo")
    tensors = {index: os.urandom(8 * (index + 1)) for index in range(4)}
    for index, data in tensors.items():
        assert probe.call("set_input", context, index, probe.tensor([len(data)], U8, data)) == SUCCESS
    assert probe.call("compute", context) == SUCCESS
    for index, data in tensors.items():
        assert probe.output(context, index)[1] == data
    assert probe.output(context, 9)[0] == INVALID_ARGUMENT  # nothing was sent there


def test_data_that_does_not_match_the_dims_is_rejected(probe: Probe) -> None:
    context = probe.context("echo")
    assert probe.call("set_input", context, 0, probe.tensor([2, 2], F32, bytes(15))) == INVALID_ARGUMENT


def test_too_small_buffer(probe: Probe) -> None:
    context = probe.context("echo")
    assert probe.call("set_input", context, 0, probe.tensor([4], I64, bytes(32))) == SUCCESS
    assert probe.call("compute", context) == SUCCESS
    errno, _, reported = probe.output(context, size=31)
    assert errno == TOO_LARGE and reported == 32


def test_outputs_before_compute(probe: Probe) -> None:
    context = probe.context("echo")
    assert probe.call("set_input", context, 0, probe.tensor([1], U8, b"x")) == SUCCESS
    assert probe.output(context)[0] == INVALID_ARGUMENT
