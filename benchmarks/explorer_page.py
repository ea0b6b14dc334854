"""explorer.html: how big the page is and how long Chromium takes to open it, by hand.

    python benchmarks/explorer_page.py                          the two pages below
    python benchmarks/explorer_page.py results_pytorch/explorer.html ...   also these pages

Pages measured:
  default    the page of a short default-sized run (reversal, 2 layers, 4 heads, d_model 128) with
             --track_internals, trained here for one epoch (its size is the default run's: the
             same shape, examples and snapshots every 50 steps)
  sentence   the translation recipe's shape (3 + 3 layers, 4 heads, d_model 256,
             benchmarks/translation_multi30k.py) reading a 40-token sentence and writing 40 tokens

For each: the file size, the load time (navigation start to the end of the first drawing, median of
5 loads) and the time one interaction takes (choosing another layer: every view drawn again). The
browser is Debian's Chromium, headless, through selenium, as the tests drive it.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402

from utils.explorer.page import write_explorer  # noqa: E402


def default_run_page(folder: Path) -> Path:
    from pytorch_version.train import train
    from utils.runtime.config import RunConfig

    cfg = RunConfig(version="pytorch", output_dir=str(folder), epochs=1, track_internals=True, quiet=True)
    train(cfg)
    return folder / "results_pytorch" / "explorer.html"


def sentence_page(folder: Path, length: int = 40) -> Path:
    from pytorch_version.model import Transformer
    from utils.runtime.config import ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(src_vocab_size=8000, tgt_vocab_size=8000, hidden_size=256, num_layers=3, num_heads=4,
                      ffn_size=1024, max_position=128)  # fmt: skip
    model = Transformer(cfg).eval()
    src = torch.randint(4, 8000, (1, length))
    tgt = torch.cat([torch.ones(1, 1, dtype=torch.long), torch.randint(4, 8000, (1, length - 1))], 1)
    words = lambda ids: [f"w{int(i)}" for i in ids]
    return write_explorer(model, [(src, tgt, words)], folder / "sentence.html", f"{length}-token sentence")


def measure(driver, page: Path, loads: int = 5) -> dict:
    times = []
    for _ in range(loads):
        driver.get(page.resolve().as_uri())
        times.append(driver.execute_script("return performance.now()"))  # after the scripts ran
    interaction = driver.execute_script("""
        const t0 = performance.now();
        const s = window.explorer.state; s.layer = 0; window.explorer.render();
        return performance.now() - t0;""")
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return {"kB": page.stat().st_size / 1e3, "load_ms": statistics.median(times), "relayout_ms": interaction,
            "errors": len(errors)}  # fmt: skip


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from tests.explorer.browser import browser_paths

    flags = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")]
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_tile")
    print("CPU flags:", " ".join(f for f in wanted if flags and f in flags[0].split()))
    folder = Path(tempfile.mkdtemp(prefix="explorer_bench_"))
    start = time.perf_counter()
    pages = {"default": default_run_page(folder), "sentence (40 tokens)": sentence_page(folder)}
    print(f"pages written in {time.perf_counter() - start:.1f} s (the default one after training 1 epoch)")
    pages |= {Path(p).name: Path(p) for p in sys.argv[1:]}
    browser, driver_path = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1600"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        print(f"{'page':24s} {'size kB':>8s} {'load ms':>8s} {'redraw ms':>10s} errors")
        for name, page in pages.items():
            m = measure(driver, page)
            print(f"{name:24s} {m['kB']:8.0f} {m['load_ms']:8.0f} {m['relayout_ms']:10.0f} {m['errors']}")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
