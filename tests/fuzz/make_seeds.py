#!/usr/bin/env python3
"""Writes the libFuzzer seed inputs of tests/fuzz/seeds/ (committed; rerun after a format
change). The safetensors seed is written here from the format's description (header length,
JSON header, data; cudarts' CRC-32 checksums in the metadata), independently of the C++
writer, so the fuzz harness also starts from a file the reader must accept."""
import gzip, json, os, struct, zlib

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")

def put(harness, name, data):
    with open(os.path.join(here, harness, name), "wb") as f:
        f.write(data)

# safetensors with cudarts checksums
tensors = {"a": ("F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)),
           "b": ("I32", [3], struct.pack("<3i", 7, -1, 0))}
meta = {"cudarts": json.dumps({"epoch": 1, "step": 0})}
def tensor_crc(name, dtype, shape, data):
    head = (name + "\n" + dtype + "\n" + "".join(f"{d}," for d in shape)).encode()
    return zlib.crc32(data, zlib.crc32(head))
def meta_crc(md):
    crc = 0
    for k in sorted(md):
        crc = zlib.crc32(f"{k}={len(md[k].encode())}:{md[k]}\n".encode(), crc)
    return crc
sums = {n: f"{tensor_crc(n, *t):08x}" for n, t in tensors.items()}
sums["__metadata__"] = f"{meta_crc(meta):08x}"
md = dict(meta)
md["cudarts.crc32"] = json.dumps(sums, separators=(",", ":"))
header, offset, blob = {"__metadata__": md}, 0, b""
for n in sorted(tensors):
    dtype, shape, data = tensors[n]
    header[n] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
    offset += len(data)
    blob += data
text = json.dumps(header, separators=(",", ":")).encode()
text += b" " * (-len(text) % 8)
put("fuzz_safetensors", "valid.safetensors", struct.pack("<Q", len(text)) + text + blob)

# IDX (ubyte, 2 x 3 x 3), raw and gzip
idx = bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 3, 3) + bytes(range(18))
put("fuzz_idx", "images.idx", idx)
put("fuzz_idx", "images.idx.gz", gzip.compress(idx))
put("fuzz_idx", "labels.idx", bytes([0, 0, 8, 1]) + struct.pack(">I", 4) + bytes([0, 3, 9, 1]))

# CIFAR-10: two records (label, 3072 pixels)
put("fuzz_cifar10", "two_records.bin",
    bytes([3]) + bytes(i % 256 for i in range(3072)) + bytes([9]) + bytes(3072))

# genotype (DARTS_V2)
g = {"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["sep_conv_3x3", 1],
                ["sep_conv_3x3", 1], ["skip_connect", 0], ["skip_connect", 0], ["dil_conv_3x3", 2]],
     "normal_concat": [2, 3, 4, 5],
     "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 1],
                ["max_pool_3x3", 0], ["skip_connect", 2], ["skip_connect", 2], ["max_pool_3x3", 1]],
     "reduce_concat": [2, 3, 4, 5]}
put("fuzz_genotype", "darts_v2.json", json.dumps(g).encode())
# the same in the Python notation, as a genotypes.py with an alias
def py_genes(genes):
    return "[" + ", ".join(f"('{op}', {i})" for op, i in genes) + "]"
py = (f"DARTS_V2 = Genotype(normal={py_genes(g['normal'])}, normal_concat=range(2, 6), "
      f"reduce={py_genes(g['reduce'])}, reduce_concat=[2, 3, 4, 5])  # comment\n"
      "DARTS = DARTS_V2\n")
put("fuzz_genotype", "darts_v2.py", py.encode())

# run files: the metadata line, then log.jsonl (the harness's configuration: epochs 4, batch 16)
m = {"config": {"epochs": 4, "batch": 16}, "epoch": 2, "step": 0, "rng_offset": 1234,
     "opt_w/steps": 12, "opt_a/steps": 12}
log = "\n".join(json.dumps({"epoch": e, "train_loss": 1.5, "alphas": {"normal": [[0.125] * 8]}})
                for e in (1, 2))
put("fuzz_run_files", "resume.txt", (json.dumps(m) + "\n" + log + "\n").encode())
