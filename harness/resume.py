"""A pack's resumable state: what a killed or preempted pack needs to go on from its last saved epoch.

Every few epochs the training loop saves, into the pack's resume folder: the weights and the optimiser's
state (safetensors; the optimiser's hyper-parameters as JSON), every member's random-generator states,
the epoch, and each member's records so far (JSON). The tensors go to state-<epoch>.safetensors and
then state.json names them, written atomically last: a state is either whole or not there. Resuming
restores all of it, so a resumed job's numbers equal an uninterrupted run's, bit for bit on a CPU.
The folder is deleted when the pack ends. Never pickle.

Integrity: state.json records the sha256 of the tensor file and a sha256 of its own content (the epoch, the
records), and a load checks both, and that the tensors are the ones this pack needs, before it changes
anything. A state that fails (truncated, garbled, edited, a file missing) raises DamagedState naming the
file; the caller moves it aside (set_aside) and trains from epoch 0, so a damaged state never yields
numbers and never fails the same way on every retry.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from harness.checksums import record_sha256, sha256_file
from harness.disk import replacing


def _state_tensors(model, optimiser, members) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {f"model/{key}": value.detach().contiguous().clone() for key, value in model.state_dict().items()}
    optim = optimiser.state_dict()
    for index, state in optim["state"].items():
        for name, value in state.items():
            tensors[f"optim/{index}/{name}"] = torch.as_tensor(value).contiguous().clone()
    for g, member in enumerate(members):
        for stream, gen in member.gens.items():
            tensors[f"gen/{g}/{stream}"] = gen.get_state()
    return tensors, {"param_groups": optim["param_groups"]}


def save_state(folder: Path, epoch: int, model, optimiser, members) -> None:
    """Write the pack's state after `epoch` (atomically: state.json is written last and names the tensors)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors, optim = _state_tensors(model, optimiser, members)
    name = f"state-{epoch}.safetensors"
    with replacing(folder / name) as tmp:
        save_file({k: v.cpu() for k, v in tensors.items()}, str(tmp))
    record = {"epoch": epoch, "tensors": name, "tensors_sha256": sha256_file(folder / name), "optimiser": optim,
              "members": [{"job_id": m.job.job_id, "alive": m.alive, "status": m.result.status,
                           "failed_epoch": m.result.failed_epoch, "error": m.result.error,
                           "epochs": m.result.epochs} for m in members]}
    record["record_sha256"] = record_sha256(record, "record_sha256")
    with replacing(folder / "state.json") as tmp:
        tmp.write_text(json.dumps(record))
    for old in folder.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


class DamagedState(RuntimeError):
    """A resume state that cannot be trusted; the message names the file and what is wrong."""


def _checked(folder: Path, model, members) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """(record, tensors) of the state in `folder` after every check, None where there is no state or it is
    another pack's; DamagedState where it cannot be trusted."""
    from safetensors.torch import load_file

    index = folder / "state.json"
    if not index.exists():
        return None
    try:
        record = json.loads(index.read_text())
        ids = [m["job_id"] for m in record["members"]]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise DamagedState(f"{index} cannot be read ({type(exc).__name__}: {exc})") from None
    if ids != [m.job.job_id for m in members]:
        return None  # another pack's state: start afresh
    if not isinstance(record, dict) or record.get("record_sha256") != record_sha256(record, "record_sha256"):
        raise DamagedState(f"{index} does not match its checksum (edited or written by an older release)")
    tensors_path = folder / str(record.get("tensors", ""))
    try:
        if sha256_file(tensors_path) != record.get("tensors_sha256"):
            raise DamagedState(f"{tensors_path} does not match the sha256 in {index.name}")
        tensors = load_file(str(tensors_path), device="cpu")
    except OSError as exc:
        raise DamagedState(f"{tensors_path} cannot be read ({exc.strerror or exc})") from None
    except DamagedState:
        raise
    except Exception as exc:  # safetensors' own errors on a file that passed the checksum (it cannot)
        raise DamagedState(f"{tensors_path} cannot be loaded ({type(exc).__name__})") from None
    wanted = {f"model/{key}": value.shape for key, value in model.state_dict().items()}
    wanted.update({f"gen/{g}/{stream}": None for g, m in enumerate(members) for stream in m.gens})
    for key, shape in wanted.items():
        if key not in tensors or (shape is not None and tensors[key].shape != shape):
            raise DamagedState(f"{tensors_path} lacks {key} as this pack has it")
    epochs = [len(m["epochs"]) for m in record["members"] if m.get("alive")]
    if not isinstance(record.get("epoch"), int) or any(n != record["epoch"] for n in epochs):
        raise DamagedState(f"{index}: epoch {record.get('epoch')!r} disagrees with the records it holds")
    return record, tensors


def set_aside(folder: Path) -> Path:
    """Move a damaged state's folder out of the way (kept for inspection); returns where it went."""
    target = folder.with_name(f"{folder.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(folder, target)
    return target


def load_state(folder: Path, model, optimiser, members, device: torch.device) -> int:
    """Restore the pack's state if `folder` holds one for these jobs; returns the epoch it ended (0: none).
    Raises DamagedState, having changed nothing, where the state fails a check."""
    checked = _checked(folder, model, members)
    if checked is None:
        return 0
    record, tensors = checked
    model.load_state_dict({k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, index_text, name = key.split("/", 2)
            state.setdefault(int(index_text), {})[name] = value
    optimiser.load_state_dict({"state": state, "param_groups": record["optimiser"]["param_groups"]})
    for g, member in enumerate(members):
        for stream, gen in member.gens.items():
            gen.set_state(tensors[f"gen/{g}/{stream}"])
        saved = record["members"][g]
        member.alive = saved["alive"]
        member.result.status, member.result.failed_epoch = saved["status"], saved["failed_epoch"]
        member.result.error, member.result.epochs = saved["error"], saved["epochs"]
    return int(record["epoch"])


def clear(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
