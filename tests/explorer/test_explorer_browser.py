"""explorer.html in a real browser with the network off: it loads without console errors or requests,
the pickers change what is drawn, what is drawn is the cache's numbers, the step view's softmax sums
to 1, the model view opens a head, the slider moves the training view, and 60 tokens stay readable."""

from __future__ import annotations

import itertools

import pytest
import torch
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.explorer.browser import console_errors, not_blank, open_page, requested_urls
from tests.factory import tiny_bert, tiny_gpt, tiny_pytorch, tiny_vit
from utils.explorer.page import write_explorer
from utils.observe.monitor import InternalsRecorder
from utils.observe.tracing import run_with_cache

SRC = torch.tensor([[5, 6, 7, 8, 9, 2]])
TGT = torch.tensor([[1, 10, 11, 12, 13]])
DRAW_MIN = 0.005  # explorer.js: weights below this draw no line


def tokens(ids):
    return [f"t{int(i)}" for i in ids]


@pytest.fixture(scope="module")
def translation_page(tmp_path_factory):
    """(page, model): an encoder-decoder's page with three training snapshots of changing weights."""
    model = tiny_pytorch()
    recorder = InternalsRecorder(SRC, TGT, every=1)
    generator = torch.Generator().manual_seed(0)
    for step in (1, 5, 9):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=generator))
        recorder.record(model, step)
    second = (SRC[:, 2:], TGT[:, :3], tokens)
    path = tmp_path_factory.mktemp("explorer") / "explorer.html"
    return write_explorer(model, [(SRC, TGT, tokens), second], path, "test", recorder.to_dict()), model


def drawn_lines(driver) -> list[tuple[int, int, int, float]]:
    return [
        (
            int(e.get_attribute("data-h")),
            int(e.get_attribute("data-q")),
            int(e.get_attribute("data-k")),
            float(e.get_attribute("data-w")),
        )
        for e in driver.find_elements(By.CSS_SELECTOR, "#head-view line")
    ]


def only_head(driver, head: int) -> None:
    """Press `head`, then release every other head."""
    toggle = driver.find_element(By.CSS_SELECTOR, f'.head-toggle[data-head="{head}"]')
    if toggle.get_attribute("aria-pressed") != "true":
        toggle.click()
    for other in driver.find_elements(By.CSS_SELECTOR, ".head-toggle[aria-pressed=true]"):
        if other.get_attribute("data-head") != str(head):
            other.click()


def test_the_page_loads_offline_with_no_error_and_no_request(browser, translation_page):
    page, _ = translation_page
    open_page(browser, page)
    assert browser.execute_script("return window.explorer.chosenName()") == "decoder.1.cross_attn"
    assert console_errors(browser) == []
    assert all(url.startswith(("file:", "data:", "about:")) for url in requested_urls(browser))
    assert not_blank(browser.get_screenshot_as_png())


def test_layer_and_head_pickers_change_the_lines_and_they_are_the_caches_weights(browser, translation_page):
    page, model = translation_page
    open_page(browser, page)
    _, cache = run_with_cache(model, SRC, TGT)
    Select(browser.find_element(By.ID, "kind-select")).select_by_value("cross-attention")
    seen = {}
    for layer in (0, 1):
        Select(browser.find_element(By.ID, "layer-select")).select_by_value(str(layer))
        for head in (2, 3):
            only_head(browser, head)
            lines = drawn_lines(browser)
            weights = cache[f"decoder.{layer}.cross_attn.weights"][0, head]
            assert {h for h, *_ in lines} == {head}
            for _, i, j, w in lines:  # the number on the page is the cache's, to its 4 decimals
                assert abs(w - weights[i, j].item()) <= 5e-5
            assert len(lines) == int((weights >= DRAW_MIN).sum())  # every weight worth a line is drawn
            seen[layer, head] = lines
    assert len({tuple(v) for v in seen.values()}) == 4  # each choice draws something else
    browser.find_element(By.ID, "all-heads").click()
    assert {h for h, *_ in drawn_lines(browser)} == {0, 1, 2, 3}  # all heads overlaid, one colour each


def test_the_step_view_softmax_sums_to_one_and_equals_the_caches_weights(browser, translation_page):
    page, model = translation_page
    open_page(browser, page)
    _, cache = run_with_cache(model, SRC, TGT)
    Select(browser.find_element(By.ID, "kind-select")).select_by_value("decoder self-attention")
    Select(browser.find_element(By.ID, "layer-select")).select_by_value("0")
    only_head(browser, 1)
    browser.find_element(By.CSS_SELECTOR, '#head-view text[data-side="q"][data-index="2"]').click()
    cells = browser.find_elements(By.CSS_SELECTOR, "#step-table td.softmax")
    page_softmax = [float(c.get_attribute("data-value")) for c in cells]
    expected = cache["decoder.0.self_attn.weights"][0, 1, 2].tolist()
    assert len(page_softmax) == len(expected) == TGT.size(1)
    assert abs(float(browser.find_element(By.ID, "softmax-sum").get_attribute("data-value")) - 1) < 1e-6
    assert max(abs(a - b) for a, b in zip(page_softmax, expected)) < 1e-5
    assert page_softmax[3:] == [0, 0]  # query 2 may not see keys 3 and 4: the look-ahead mask
    assert "q_2" in browser.find_element(By.ID, "steps").text


def test_the_model_view_opens_the_head_clicked(browser, translation_page):
    page, _ = translation_page
    open_page(browser, page)
    browser.find_element(By.CSS_SELECTOR, '#model-view figure[data-layer="0"][data-head="3"]').click()
    assert Select(browser.find_element(By.ID, "layer-select")).first_selected_option.text == "layer 0"
    pressed = browser.find_elements(By.CSS_SELECTOR, ".head-toggle[aria-pressed=true]")
    assert [b.get_attribute("data-head") for b in pressed] == ["3"]
    assert {h for h, *_ in drawn_lines(browser)} == {3}
    assert (
        browser.find_element(
            By.CSS_SELECTOR, '#model-view figure[data-layer="0"][data-head="3"]'
        ).get_attribute("class")
        == "chosen"
    )


def test_hovering_a_token_isolates_its_lines(browser, translation_page):
    page, _ = translation_page
    open_page(browser, page)
    browser.find_element(By.ID, "all-heads").click()
    token = browser.find_element(By.CSS_SELECTOR, '#head-view text[data-side="k"][data-index="1"]')
    ActionChains(browser).move_to_element(token).perform()
    shown = [e for e in browser.find_elements(By.CSS_SELECTOR, "#head-view line") if e.is_displayed()]
    assert shown and all(e.get_attribute("data-k") == "1" for e in shown)


def test_the_slider_moves_the_training_view(browser, translation_page):
    page, _ = translation_page
    open_page(browser, page)
    slider = browser.find_element(By.ID, "evolution-slider")
    canvas = browser.find_element(By.ID, "evolution-canvas")
    last = (
        browser.find_element(By.ID, "evolution-step").text,
        canvas.get_attribute("data-step"),
        browser.execute_script("return arguments[0].toDataURL()", canvas),
    )
    browser.execute_script("arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'))", slider)
    first = (
        browser.find_element(By.ID, "evolution-step").text,
        canvas.get_attribute("data-step"),
        browser.execute_script("return arguments[0].toDataURL()", canvas),
    )
    assert last[0].startswith("step 9") and first[0].startswith("step 1")
    assert (last[1], first[1]) == ("9", "1")
    assert last[2] != first[2]  # another snapshot, other weights drawn


def test_the_example_picker_changes_the_tokens(browser, translation_page):
    page, _ = translation_page
    open_page(browser, page)
    before = [t.text for t in browser.find_elements(By.CSS_SELECTOR, '#head-view text[data-side="k"]')]
    Select(browser.find_element(By.ID, "example-select")).select_by_value("1")
    after = [t.text for t in browser.find_elements(By.CSS_SELECTOR, '#head-view text[data-side="k"]')]
    assert before == tokens(SRC[0]) and after == tokens(SRC[0, 2:])


@pytest.mark.parametrize("arch", ["gpt", "bert", "vit"])
def test_every_family_opens_without_errors(browser, arch, tmp_path):
    model = {"gpt": tiny_gpt, "bert": tiny_bert, "vit": tiny_vit}[arch]()
    if arch == "vit":
        example = (
            torch.rand(1, 1, 8, 8),
            torch.zeros(1, 0, dtype=torch.long),
            lambda image: [str(i) for i in range(17)],
        )
    else:
        example = (SRC, TGT if arch == "gpt" else torch.zeros(1, 0, dtype=torch.long), tokens)
    open_page(browser, write_explorer(model, [example], tmp_path / "explorer.html", arch))
    assert console_errors(browser) == []
    assert abs(float(browser.find_element(By.ID, "softmax-sum").get_attribute("data-value")) - 1) < 1e-6
    assert drawn_lines(browser)
    assert "No training snapshots" in browser.find_element(By.ID, "evolution").text


def test_sixty_tokens_stay_readable(browser, tmp_path):
    model = tiny_pytorch(max_position=128)
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, 30, (1, 60), generator=g)
    tgt = torch.cat([torch.ones(1, 1, dtype=torch.long), torch.randint(4, 30, (1, 59), generator=g)], 1)
    open_page(browser, write_explorer(model, [(src, tgt, tokens)], tmp_path / "explorer.html", "60 tokens"))
    assert console_errors(browser) == []
    labels = browser.find_elements(By.CSS_SELECTOR, '#head-view text[data-side="q"]')
    assert len(labels) == 60
    ys = [label.rect["y"] for label in labels]
    assert min(b - a for a, b in itertools.pairwise(ys)) >= 12  # one token per line, none on top of another
    assert len(browser.find_elements(By.CSS_SELECTOR, "#step-table td.softmax")) == 60
    assert not_blank(browser.get_screenshot_as_png())


def test_the_browser_would_see_a_request_and_cannot_reach_the_network(browser, tmp_path):
    """The request check above can fail: a page that asks for an address is seen asking, and gets nothing."""
    page = tmp_path / "asks.html"
    page.write_text(
        '<!DOCTYPE html><img id="i" src="http://example.com/x.png"><script>'
        'fetch("https://example.org/")'
        '.then(() => document.title = "reached", () => document.title = "refused")'
        "</script>"
    )
    open_page(browser, page)
    WebDriverWait(browser, 20).until(lambda driver: driver.title)
    urls = requested_urls(browser)
    assert "http://example.com/x.png" in urls and "https://example.org/" in urls
    assert browser.title == "refused"
