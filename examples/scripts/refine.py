"""The orchestrator of examples/dynamic_jobs.yaml. The seed job is given its lineage and a
starting residual; every later one finds both through its lineage: the lineage from
$TORC_ORCHESTRATOR_LINEAGE_ID, the residual in the file the last step wrote."""

import sys
from pathlib import Path

from torcctl import Orchestrator, SpawnJob

TOLERANCE = 0.01

orch = Orchestrator.from_env(lineage_fallback=sys.argv[1] if len(sys.argv) > 1 else None)
folder = Path("output") / "refine" / orch.lineage
done = orch.generation
residual = float(sys.argv[2]) if done == 0 else float((folder / f"step_{done}.txt").read_text())

if residual < TOLERANCE:
    orch.converge(state={"steps": done, "residual": residual})
    print(f"{orch.lineage}: converged after {done} steps (residual {residual})")
    sys.exit(0)

step = f"step_{orch.lineage}_{done + 1}"
halve = f"mkdir -p {folder} && awk 'BEGIN {{ print {residual} / 2 }}' > {folder}/step_{done + 1}.txt"
orch.spawn(
    [
        SpawnJob(name=step, command=halve, resource_requirements="step"),
        SpawnJob(
            name=f"refine_{orch.lineage}_{done + 1}",
            command="python3 examples/scripts/refine.py",
            resource_requirements="orchestrator",
            depends_on=[step],
        ),
    ],
    state={"residual": residual},
)
print(f"{orch.lineage}: step {done + 1} added (residual {residual})")
