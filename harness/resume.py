"""A pack's resumable state: what a killed or preempted pack needs to go on from its last saved epoch.

Every few epochs the training loop saves, into the pack's resume folder: the weights and the optimiser's
state (safetensors; the optimiser's hyper-parameters as JSON), every member's random-generator states,
the epoch, and each member's records so far (JSON). The tensors go to state-<epoch>.safetensors and
then state.json names them, written atomically last: a state is either whole or not there. Resuming
restores all of it, so a resumed job's numbers equal an uninterrupted run's, bit for bit on a CPU.
The folder is deleted when the pack ends. Never pickle.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch


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
    tmp = folder / f".{name}.tmp"
    save_file({k: v.cpu() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, folder / name)
    record = {"epoch": epoch, "tensors": name, "optimiser": optim,
              "members": [{"job_id": m.job.job_id, "alive": m.alive, "status": m.result.status,
                           "failed_epoch": m.result.failed_epoch, "error": m.result.error,
                           "epochs": m.result.epochs} for m in members]}
    tmp_json = folder / ".state.json.tmp"
    tmp_json.write_text(json.dumps(record))
    os.replace(tmp_json, folder / "state.json")
    for old in folder.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def load_state(folder: Path, model, optimiser, members, device: torch.device) -> int:
    """Restore the pack's state if `folder` holds one for these jobs; returns the epoch it ended (0: none)."""
    from safetensors.torch import load_file

    index = folder / "state.json"
    if not index.exists():
        return 0
    record = json.loads(index.read_text())
    if [m["job_id"] for m in record["members"]] != [m.job.job_id for m in members]:
        return 0  # another pack's state: start afresh
    tensors = load_file(str(folder / record["tensors"]), device="cpu")
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
