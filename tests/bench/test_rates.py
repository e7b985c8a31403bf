"""harness.bench.rates: a rate table that is not one names the file and line."""

import pytest

from harness.bench.rates import read_rates


def test_rate_tables_name_the_file_and_line(tmp_path):
    header = "card,model,depth,width,M,b,batch_size,precision,compile,concurrent,samples_per_s,peak_memory_gb\n"
    row = "H100,wrn,28,10,1,1,64,bf16,none,1,3000,10\n"
    cases = {
        "short.csv": (header + row + "H100,wrn,28\n", "short.csv: line 3: not a rate row"),
        "huge.csv": (header + row + "H100," + "x" * 200_000 + "\n", "huge.csv: line 3: not CSV (field larger than"),
        "latin1.csv": ((header + row).encode() + b"H\xe9\n", "latin1.csv: not UTF-8 text (byte"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            read_rates(path)
