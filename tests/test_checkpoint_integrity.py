"""What a checkpoint must be to be written or loaded: a SHA-256 digest of its contents that catches damage
``torch.load`` does not see, finite weights, EMA and optimizer moments, a sane step; every refusal a one-line
:class:`CheckpointError` naming the file and the cause."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from jobs.run import TrainingDivergedError, _check_finite_weights, _last_good
from train_lib.checkpoints import (
    DIGEST_KEY, MAX_STEP, CheckpointError, checkpoint_payload, load_checkpoint_file, payload_digest,
    restore_checkpoint, save_checkpoint,
)

from test_checkpoints import make_state, train_steps


def trained_state(seed: int = 0) -> dict:
    state = make_state(seed)
    train_steps(state, 3)  # the EMA, the weights and both Adam moments all differ from one another
    return state


def refused(match: str, call, *args) -> CheckpointError:
    with pytest.raises(CheckpointError, match=match) as caught:
        call(*args)
    assert "\n" not in str(caught.value), "the message must be one line"
    return caught.value


# ------------------------------------------------------------------ digest
@pytest.mark.parametrize("where", ["model", "ema", "optimizer"])
def test_a_flipped_byte_in_tensor_data_is_refused(tmp_path, where):
    """One byte inside one tensor's data in the zip archive, changed: ``torch.load`` takes it, the digest does not."""
    state = trained_state()
    tensor = {
        "model": lambda: next(state["model"].parameters()),
        "ema": lambda: state["ema"].shadow_params[0],
        "optimizer": lambda: state["optimizer"].state_dict()["state"][0]["exp_avg_sq"],
    }[where]().detach()
    path = save_checkpoint(tmp_path / "checkpoint.pth", state)
    data = bytearray(path.read_bytes())
    original = tensor.numpy().tobytes()
    offset = bytes(data).find(original)
    assert offset >= 0 and bytes(data).find(original, offset + 1) < 0, "the tensor's bytes must be found once"
    data[offset + len(original) // 2] ^= 0x10
    path.write_bytes(bytes(data))

    assert torch.load(path, weights_only=True)["step"] == 3  # the damage is invisible to torch.load
    error = refused("is corrupted", load_checkpoint_file, path)
    assert str(path) in str(error)
    before = {k: v.clone() for k, v in make_state(seed=1)["model"].state_dict().items()}
    fresh = make_state(seed=1)
    refused("is corrupted", restore_checkpoint, path, fresh)
    for key, value in fresh["model"].state_dict().items():
        assert torch.equal(value, before[key])  # nothing loaded


def test_an_edited_entry_is_refused_and_a_file_without_digest_loads(tmp_path):
    state = trained_state()
    path = save_checkpoint(tmp_path / "checkpoint.pth", state)
    payload = torch.load(path, weights_only=True)
    assert payload[DIGEST_KEY] == payload_digest(checkpoint_payload(state))
    payload["step"] = 4  # re-saved by hand with the old digest
    torch.save(payload, path)
    refused(rf"checkpoint {path} is corrupted", load_checkpoint_file, path)

    del payload[DIGEST_KEY]  # the reference's format: no digest, loaded without that check
    torch.save(payload, path)
    assert restore_checkpoint(path, make_state(seed=1))["step"] == 4


def test_digest_covers_values_shapes_and_types_not_devices_or_order():
    payload = checkpoint_payload(trained_state())
    digest = payload_digest(payload)
    reordered = dict(reversed(list(payload.items())))
    assert payload_digest(reordered) == digest == payload_digest({**payload, DIGEST_KEY: "anything"})
    changed = {**payload, "model": dict(payload["model"])}
    key = next(iter(changed["model"]))
    changed["model"][key] = payload["model"][key].clone()
    changed["model"][key].view(-1)[0] = torch.nextafter(changed["model"][key].view(-1)[0], torch.tensor(np.inf))
    assert payload_digest(changed) != digest  # one ulp in one weight
    changed["model"][key] = payload["model"][key].reshape(-1)
    assert payload_digest(changed) != digest  # same bytes, another shape
    changed["model"][key] = payload["model"][key].double()
    assert payload_digest(changed) != digest
    assert payload_digest({**payload, "step": 3.0}) != payload_digest({**payload, "step": 3})


# ------------------------------------------------------------------ non-finite values
@pytest.mark.parametrize("where", ["model", "ema", "optimizer"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_state_is_never_written(tmp_path, where, value):
    state = trained_state()
    path = save_checkpoint(tmp_path / "checkpoint.pth", state)
    before = path.read_bytes()
    with torch.no_grad():
        if where == "model":
            next(state["model"].parameters())[0, 0] = value
        elif where == "ema":
            state["ema"].shadow_params[-1][0] = value
        else:
            next(iter(state["optimizer"].state.values()))["exp_avg"].view(-1)[0] = value
    refused(rf"refusing to write checkpoint {path}: it holds NaN or infinite values in {where}", save_checkpoint, path, state)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]

    exp = types.SimpleNamespace(state=state, layout=types.SimpleNamespace(meta_checkpoint=path))
    with pytest.raises(TrainingDivergedError, match=rf"not finite after step 3 \({where}.*last good checkpoint is kept: {path} \(step 3\)"):
        _check_finite_weights(exp, 3)


@pytest.mark.parametrize("with_digest", [False, True])
def test_nonfinite_file_is_refused(tmp_path, with_digest):
    """A file holding an infinite Adam moment (the reference's format, or ours with a matching digest) is refused."""
    payload = checkpoint_payload(trained_state())
    payload["optimizer"]["state"][1]["exp_avg_sq"].view(-1)[2] = float("inf")
    if with_digest:
        payload[DIGEST_KEY] = payload_digest(payload)
    torch.save(payload, tmp_path / "checkpoint.pth")
    refused(r"is refused: it holds NaN or infinite values in optimizer\['state'\]\[1\]\['exp_avg_sq'\]",
            load_checkpoint_file, tmp_path / "checkpoint.pth")


def test_the_last_good_checkpoint_is_one_that_loads(tmp_path):
    path = tmp_path / "checkpoints-meta" / "checkpoint.pth"
    exp = types.SimpleNamespace(layout=types.SimpleNamespace(meta_checkpoint=path))
    assert _last_good(exp) == "No checkpoint had been saved."
    save_checkpoint(path, trained_state())
    assert _last_good(exp) == f"The last good checkpoint is kept: {path} (step 3)."
    payload = torch.load(path, weights_only=True)
    payload["model"][next(iter(payload["model"]))].view(-1)[0] = float("nan")
    torch.save(payload, path)
    message = _last_good(exp)
    assert "not usable" in message and "is corrupted" in message and "last good" not in message


# ------------------------------------------------------------------ steps
@pytest.mark.parametrize(
    "step, cause",
    [(-1, "outside"), (MAX_STEP + 1, "outside"), (torch.tensor(-3), "outside"), (2.5, "not an integer"),
     ("3", "not an integer"), (True, "not an integer"), (None, "not an integer"), (torch.tensor(2.0), "not an integer")],
)
def test_bad_steps_are_refused(tmp_path, step, cause):
    payload = checkpoint_payload(trained_state())
    payload["step"] = step
    torch.save(payload, tmp_path / "checkpoint.pth")
    refused(rf"checkpoint {tmp_path / 'checkpoint.pth'} is refused: its step .* {cause}", load_checkpoint_file,
            tmp_path / "checkpoint.pth")


@pytest.mark.parametrize("step", [0, MAX_STEP, torch.tensor(7)])
def test_good_steps_load(tmp_path, step):
    payload = checkpoint_payload(trained_state())
    payload["step"] = step
    torch.save(payload, tmp_path / "checkpoint.pth")
    assert restore_checkpoint(tmp_path / "checkpoint.pth", make_state(seed=1))["step"] == int(step)


def test_a_negative_step_is_never_written(tmp_path):
    state = trained_state()
    state["step"] = -1
    refused("refusing to write checkpoint .*: its step -1 is outside", save_checkpoint, tmp_path / "c.pth", state)
    assert not (tmp_path / "c.pth").exists()


def test_unloadable_files_get_one_line_messages(tmp_path):
    import os

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"model": Exploit(), "step": 0}, tmp_path / "evil.pth")
    error = refused(r"cannot be read \(UnpicklingError: .*GLOBAL posix.system", load_checkpoint_file, tmp_path / "evil.pth")
    assert "weights_only` set to `False`" not in str(error)  # torch's advice to disable the check is dropped
    assert not (tmp_path / "pwned").exists()
    path = save_checkpoint(tmp_path / "wide.pth", make_state(width=32))
    refused(rf"checkpoint {path} does not fit this model \(RuntimeError: .*size mismatch", restore_checkpoint, path, make_state())
