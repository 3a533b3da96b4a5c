"""Moves the copied runs that a tune never used (not a search trial, not a seed it trained) out of its folder."""
import json, shutil, sys
from pathlib import Path
import yaml

out = Path(sys.argv[1]); j = json.loads((out / "tune.json").read_text())
def key(loss, params): return (loss, params.get("kernel"), None if params.get("alpha") is None else round(float(params["alpha"]), 6), round(float(params["learning_rate"]), 12))
used = {key(t["study"], t["params"]) + (1,) for t in j["trials"] if t["state"] in ("complete", "pruned")}
for rung in j["rungs"]:
    for e in rung["candidates"]:
        if e["advances"]:
            c = e["candidate"]; used.add(key(c["loss"], c) + (rung["seeds"] + 1,))
c = j["softmax"]["candidate"]; used |= {key("softmax", c) + (s,) for s in range(1, j["softmax"]["seeds"] + 1)}
for path in sorted((out / "runs").glob("*/*/config.yaml")):
    cfg = yaml.safe_load(path.read_text()); loss = cfg["loss"]
    k = key(loss["name"], {**loss, "learning_rate": cfg["training"]["learning_rate"]}) + (cfg["training"]["seed"],)
    if k not in used:
        dest = out.parent / f"unused-{out.name}" / path.parent.relative_to(out); dest.parent.mkdir(parents=True, exist_ok=True)
        print("unused:", path.parent); shutil.move(str(path.parent), dest)
