"""Made with napari-labelreg at commit 4e9e9f3 (checkpoint format 2), before the stages refactor."""
import json, sys
from pathlib import Path
import numpy as np, torch
from napari_labelreg.config import ModelConfig, TrainConfig, LossConfig
from napari_labelreg.phantom import make_phantom
from napari_labelreg.training.loop import Trainer
from napari_labelreg.inference import Registrator

out = Path(sys.argv[1])
TINY = dict(fixed_shape=(16, 20, 12), moving_shape=(18, 18, 16), spacing=2.5)
pairs = [make_phantom(s, **TINY).pair for s in range(3)]
test = make_phantom(9, **TINY).pair
runs = {
 "staged": TrainConfig(model=ModelConfig(width=2), geometry="centred", learning_rate=1e-3, iterations=4, locator=0.5,
                       prior=0.25, checkpoint_every=100, precision="fp32", spacing_mm=4.0, label_sampling="all",
                       schedule="cosine", loss=LossConfig(folding=1.0), network_weight=0.5),
 "paper": TrainConfig(model=ModelConfig(width=2), geometry="centred", learning_rate=1e-3, iterations=3,
                      checkpoint_every=100, precision="fp32"),
}
record = {}
ddfs = {}
for name, cfg in runs.items():
    reports = [(r.phase, r.step, r.loss) for r in Trainer(pairs, cfg, out / name)]
    record[name] = reports
    for w in (None, 1.0):
        reg = Registrator.from_run(out / name, precision="fp32", network_weight=w)
        ddfs[f"{name}_w{w}"] = reg.register_pair(test).ddf_mm
    state = torch.load(out / name / "checkpoint.pt", weights_only=True)
    print(name, {k: (v if not isinstance(v, dict) else list(v)) for k, v in state.items() if k not in ("model", "optimizer", "config")})
np.savez_compressed(out / "ddfs.npz", **ddfs)
(out / "reports.json").write_text(json.dumps(record, indent=1))
for name in runs:  # registration needs the weights alone: the optimiser's state is dropped to keep the fixture small
    path = out / name / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state["optimizer"] = None
    torch.save(state, out / f"{name}.pt")
