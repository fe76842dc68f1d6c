"""Dataset files are read without running their code and checked before training: a crafted CIFAR-10 batch is
refused by the restricted unpickler (and its payload does not run), real batches of every pickle protocol and of
numpy 1 and 2 still load; a truncated or corrupt image stops the opening of the dataset with its name, or is left
out with a logged count when ``config.data.skip_bad_images`` asks for it."""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from data_lib import get_dataset
import data_lib.files as data_files
from data_lib.files import read_cifar_batch

from test_data_files import data_config

RNG = np.random.default_rng(1)


# ------------------------------------------------------------------ CIFAR-10 pickles
def cifar_batch(n: int = 3) -> dict:
    """A batch in the CIFAR-10 python format: bytes keys, a uint8 (n, 3072) array, labels and file names as lists."""
    data = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
    return {b"batch_label": b"testing batch 1 of 1", b"labels": [3, 1, 4][:n], b"data": data,
            b"filenames": [f"{i}.png".encode() for i in range(n)]}


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_real_batches_of_every_protocol_load(tmp_path, protocol):
    batch = cifar_batch()
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    images, labels = read_cifar_batch(path)
    np.testing.assert_array_equal(images.reshape(3, -1), batch[b"data"])
    assert labels.tolist() == [3, 1, 4]


def test_a_batch_written_by_numpy_1_loads(tmp_path):
    """numpy 1 names ``numpy.core.multiarray._reconstruct`` (as in the published CIFAR-10 files), numpy 2
    ``numpy._core``; protocol 2 writes the module name as text, so the older name can be put in by hand."""
    written = pickle.dumps(cifar_batch(), protocol=2)
    assert b"numpy._core.multiarray\n_reconstruct" in written
    path = tmp_path / "test_batch"
    path.write_bytes(written.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    images, labels = read_cifar_batch(path)
    assert images.shape == (3, 3, 32, 32) and labels.tolist() == [3, 1, 4]


class RunsCommand:
    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("call", ["os.system", "subprocess.call", "builtins.exec"])
def test_a_crafted_batch_is_refused_and_its_payload_does_not_run(tmp_path, call, protocol):
    marker = tmp_path / "payload_ran"
    command = f"touch {marker}"
    exploit = {
        "os.system": RunsCommand(os.system, command),
        "subprocess.call": RunsCommand(subprocess.call, ["touch", str(marker)]),
        "builtins.exec": RunsCommand(exec, f"open({str(marker)!r}, 'w').close()"),
    }[call]
    batch = {**cifar_batch(), b"labels": exploit}
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=protocol))
    with pytest.raises(ValueError) as caught:
        get_dataset(data_config("CIFAR10", tmp_path, image_size=32), "test")
    message = str(caught.value)
    name = exploit.__reduce__()[0].__name__  # its module as pickled: posix, subprocess (commands in protocol 2), ...
    assert re.match(rf"cannot read the CIFAR-10 batch {re.escape(str(folder / 'test_batch'))}: it names the global "
                    rf"\w+\.{name}, which a CIFAR-10 batch does not hold", message), message
    assert "\n" not in message
    assert not marker.exists(), "the payload ran"


def test_only_the_latin1_codec_is_admitted(tmp_path):
    """Protocol-2 pickles store bytes as ``_codecs.encode(text, 'latin1')``; another codec name is refused."""
    written = pickle.dumps(cifar_batch(), protocol=2)
    assert written.count(b"X\x06\x00\x00\x00latin1") >= 1
    path = tmp_path / "data_batch_1"
    path.write_bytes(written.replace(b"X\x06\x00\x00\x00latin1", b"X\x06\x00\x00\x00rot_13"))
    with pytest.raises(ValueError, match=r"data_batch_1: it encodes bytes with the codec 'rot_13'"):
        read_cifar_batch(path)


# ------------------------------------------------------------------ image files
def encoded(image: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt)
    return buffer.getvalue()


def write_folder(root, count: int = 20, bad: dict[int, bytes] | None = None):
    """``count`` 12x12 PNGs ``00.png ...``; the indices in ``bad`` get those bytes instead."""
    root.mkdir(exist_ok=True)
    values = RNG.integers(0, 256, (count, 12, 12, 3), dtype=np.uint8)
    for i, image in enumerate(values):
        data = (bad or {}).get(i)
        (root / f"{i:02d}.png").write_bytes(data if data is not None else encoded(image, "PNG"))
    return values


def truncated(fmt: str) -> bytes:
    data = encoded(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8), fmt)
    return data[: len(data) * 2 // 3]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_truncated_image_stops_the_opening_with_its_name(tmp_path, fmt):
    write_folder(tmp_path / "images", bad={4: truncated(fmt)})
    config = data_config("image_folder", tmp_path / "images", image_size=12)
    with pytest.raises(ValueError) as caught:
        get_dataset(config, "train")
    message = str(caught.value)
    assert message.startswith(f"cannot read image file {tmp_path / 'images' / '04.png'}: ")
    assert "truncated" in message and "skip_bad_images=True" in message and "\n" not in message
    assert len(get_dataset(config, "test")) == 2  # the test split (files 9 and 19) is sound


def test_images_are_decoded_once_then_only_when_they_change(tmp_path, monkeypatch):
    """The files that decoded are remembered by size and time: a second opening decodes none; a file truncated
    since is decoded again and refused."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    decoded = []
    real = data_files.image_problem
    monkeypatch.setattr(data_files, "image_problem", lambda path: decoded.append(path.name) or real(path))
    write_folder(tmp_path / "images")
    config = data_config("image_folder", tmp_path / "images", image_size=12)
    assert len(get_dataset(config, "train")) == 18 and len(decoded) == 18
    decoded.clear()
    assert len(get_dataset(config, "train")) == 18 and decoded == []
    (tmp_path / "images" / "03.png").write_bytes(truncated("PNG"))
    with pytest.raises(ValueError, match="03.png: .*truncated"):
        get_dataset(config, "train")
    assert decoded == ["03.png"]


def test_every_bad_file_is_counted(tmp_path):
    write_folder(tmp_path, bad={2: truncated("PNG"), 5: b"not an image", 7: truncated("JPEG")})
    with pytest.raises(ValueError, match=r"02.png: .*; 2 more unreadable image file\(s\) under"):
        get_dataset(data_config("image_folder", tmp_path, image_size=12), "train")


def test_skip_bad_images_leaves_them_out_and_logs_the_count(tmp_path, caplog):
    values = write_folder(tmp_path, bad={2: truncated("PNG"), 7: truncated("JPEG")})
    config = data_config("image_folder", tmp_path, image_size=12, skip_bad_images=True)
    with caplog.at_level(logging.WARNING, logger="data_lib.files"):
        train = get_dataset(config, "train")
    kept = [i for i in range(20) if i not in (2, 7, 9, 19)]
    assert [int(p.stem) for p in train.paths] == kept
    np.testing.assert_array_equal(train.gather(torch.arange(len(kept))).numpy(), values[kept].transpose(0, 3, 1, 2))
    assert [int(p.stem) for p in get_dataset(config, "test").paths] == [9, 19]  # the split did not move
    assert "left out 2 unreadable image file(s) of 18 under" in caplog.text and "02.png" in caplog.text


def test_all_images_bad_and_skipped_is_missing_data(tmp_path):
    write_folder(tmp_path, count=3, bad={0: b"x", 1: b"y", 2: b"z"})
    with pytest.raises(ValueError, match=r"config.data.root = .* expected readable PNG/JPEG/WebP/BMP images"):
        get_dataset(data_config("image_folder", tmp_path, image_size=12, skip_bad_images=True), "train")


def test_skip_bad_images_must_be_a_bool(tmp_path):
    write_folder(tmp_path, count=3)
    with pytest.raises(ValueError, match=r"config.data.skip_bad_images must be True or False, got 'yes'"):
        get_dataset(data_config("image_folder", tmp_path, image_size=12, skip_bad_images="yes"), "train")


def test_celeba_and_lsun_check_their_files_too(tmp_path):
    celeba = tmp_path / "celeba" / "img_align_celeba"
    celeba.mkdir(parents=True)
    good = encoded(RNG.integers(0, 256, (218, 178, 3), dtype=np.uint8), "JPEG")
    (celeba / "000001.jpg").write_bytes(good)
    (celeba / "000002.jpg").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"cannot read image file .*000002.jpg: image file is truncated"):
        get_dataset(data_config("CELEBA", tmp_path / "celeba", image_size=64), "train")
    assert len(get_dataset(data_config("CELEBA", tmp_path / "celeba", image_size=64, skip_bad_images=True), "train")) == 1

    lsun = tmp_path / "lsun" / "bedroom_train"
    lsun.mkdir(parents=True)
    (lsun / "a.webp").write_bytes(encoded(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8), "WEBP")[:100])
    with pytest.raises(ValueError, match=r"cannot read image file .*a.webp"):
        get_dataset(data_config("LSUN", tmp_path / "lsun", image_size=64, category="bedroom"), "train")
