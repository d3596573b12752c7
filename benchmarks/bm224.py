import json, sys, os
sys.path.insert(0, "benchmarks")
import bench_memory as bm
from diffeosense._io import write_json
from diffeosense.provenance import provenance
limit = int(0.75 * bm._total_ram())
r = bm.run_one(224, 500, sys.argv[1], limit)
row = {"max_memory": sys.argv[1], **{k: v for k, v in r.items() if k not in "DGR"}}
write_json("benchmarks/results/bench_memory_224px.json", {
    "benchmark": "bench_memory (one budgeted run: the unbudgeted baseline takes another 12+ min "
                 "on this machine and was not run)", "model": "resnet18", "size": 224,
    "n_probes": 500, "layers": "all", "batch_size_asked": 128, "runs": [row],
    "child_address_space_limit": limit, "load_average": os.getloadavg(),
    "provenance": provenance()})
print(json.dumps(row))
