"""Text the New workset page must show whole, measured in Chromium at a desktop and a phone width, light and
dark: the R1/R2 upload's label, button and file name (not cut to "N.." or "Upload the R"), every page link
of the top bar within the screen (not run off its edge), and even spacing below "Add a sample row"."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.conftest import PASSWORD, Stack
from tests.browser.test_portal import context, fastq, onboard, shoot, sign_in

pytestmark = pytest.mark.slow

PHONE, DESKTOP = 390, 1280
LONG_NAME = "HG002_NA24385_son_HiSeq2500_2x250_S1_L001_R2_001.fastq.gz"

# For each element: its text, whether its content is wider than its box (cut), and where it is on screen.
MEASURE = """(elements) => elements.map((el) => {
  const box = el.getBoundingClientRect();
  return { text: el.textContent.trim(), title: el.title, cut: el.scrollWidth > el.clientWidth + 1,
           left: box.left, right: box.right, top: box.top, bottom: box.bottom, width: box.width,
           ellipsis: getComputedStyle(el).textOverflow === "ellipsis", viewport: window.innerWidth };
})"""

# A nav link the eye can find: inside the screen and not hidden by its list's overflow (the point at its
# middle shows the link itself).
NAV_LINKS = """(links) => links.map((a) => {
  const box = a.getBoundingClientRect();
  const hit = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
  return { text: a.textContent.trim(), left: box.left, right: box.right, viewport: window.innerWidth,
           shown: !!hit && (hit === a || a.contains(hit)) };
})"""


async def whole(
    page: Any, selector: str, count: int, problems: list[str], where: str
) -> list[dict[str, Any]]:
    """The elements `selector` matches; a problem for each one missing, cut or beyond the screen's edge."""
    found: list[dict[str, Any]] = await page.locator(selector).evaluate_all(MEASURE)
    if len(found) != count:
        problems.append(f"{where}: {selector}: {len(found)} elements, expected {count}")
    for m in found:
        if m["width"] <= 1:
            problems.append(f"{where}: {selector} {m['text']!r} is not shown: {m}")
        elif m["cut"]:
            problems.append(f"{where}: {selector} {m['text']!r} is cut: {m}")
        elif m["left"] < 0 or m["right"] > m["viewport"]:
            problems.append(f"{where}: {selector} {m['text']!r} leaves the screen: {m}")
    return found


async def nav_within_screen(page: Any, problems: list[str], where: str) -> int:
    await page.evaluate("window.scrollTo(0, 0)")  # on a phone the top bar scrolls away with the page
    links = await page.locator("nav.pages a").evaluate_all(NAV_LINKS)
    hidden = [m for m in links if not m["shown"] or m["left"] < 0 or m["right"] > m["viewport"]]
    if not links or hidden:
        problems.append(f"{where}: page links cut off or beyond the screen's edge: {hidden or 'no links'}")
    return len(links)


async def test_new_workset_text_is_whole_on_desktop_and_phone(stack: Stack, chromium: Any) -> None:
    lab = f"lab-{uuid.uuid4().hex[:6]}"
    operator = stack.user(f"ops-{uuid.uuid4().hex[:6]}@stamen.example", operator=True)
    ops_ctx = await context(chromium)
    ops = await ops_ctx.new_page()
    await sign_in(ops, stack, operator)
    await onboard(ops, stack, "Layout Lab", lab)
    await ops_ctx.close()
    admin = f"admin@{lab}.example"
    stack.cognito.admin_set_user_password(
        UserPoolId=stack.pool_id, Username=admin, Password=PASSWORD, Permanent=True
    )

    problems: list[str] = []
    for theme, width in (("light", DESKTOP), ("dark", DESKTOP), ("light", PHONE), ("dark", PHONE)):
        where = f"{theme}, {width}px"
        ctx = await context(chromium, theme=theme, width=width)
        page = await ctx.new_page()
        await sign_in(page, stack, admin)
        await page.goto(f"{stack.url}/worksets/new")
        await page.wait_for_load_state("load")

        # The label stays tied to the file input (a screen reader and get_by_label find the input by it).
        for mate in ("R1", "R2"):
            label_for = await page.get_by_label(f"Upload the {mate} file").get_attribute("id")
            if label_for != f"samples-0-{mate.lower()}-file":
                problems.append(f"{where}: 'Upload the {mate} file' labels {label_for}")
        row = ".samples tr[data-row='0']"
        # By keyboard: Tab from the R1 field reaches its file input, and its button shows the focus.
        await page.focus("#samples-0-r1")
        await page.keyboard.press("Tab")
        focused = await page.evaluate("document.activeElement.id")
        ring = await page.locator(f"{row} #samples-0-r1-file ~ .file-button").evaluate(
            "(b) => getComputedStyle(b).outlineStyle"
        )
        if focused != "samples-0-r1-file" or ring == "none":
            problems.append(f"{where}: Tab from R1 reaches {focused!r}, its button's outline {ring!r}")
        names = await whole(page, f"{row} .file-name", 2, problems, where)
        if [m["text"] for m in names] != ["No file chosen"] * 2:
            problems.append(f"{where}: file names {names}")
        await whole(page, f"{row} .file-button", 2, problems, where)
        if width == PHONE:
            labels = await whole(page, f"{row} label[for$='-file']", 2, problems, where)
            buttons = await page.locator(f"{row} .file-button").evaluate_all(MEASURE)
            for label, button in zip(labels, buttons, strict=False):
                if label["bottom"] > button["top"] + 1:
                    problems.append(
                        f"{where}: {label['text']!r} is not on a line of its own above its button"
                    )

        # "Add a sample row", then the two <details> the same distance apart.
        add = await page.locator("#spec-form .actions:has(#add-row)").evaluate_all(MEASURE)
        sheets = await page.locator("#spec-form > details").evaluate_all(MEASURE)
        assert len(add) == 1 and len(sheets) == 2, where
        below_add = sheets[0]["top"] - add[0]["bottom"]
        between = sheets[1]["top"] - sheets[0]["bottom"]
        if below_add < 12 or abs(below_add - between) > 2:
            problems.append(
                f"{where}: {below_add:.1f}px below 'Add a sample row', {between:.1f}px between the sheets"
            )

        await nav_within_screen(page, problems, where)
        if await page.evaluate("document.documentElement.scrollWidth") > width:
            problems.append(f"{where}: the page is wider than the screen")

        # A chosen file's name shows whole; a long one ends with an ellipsis and keeps its whole name in
        # its title, inside the cell.
        if theme == "light" and not problems:
            await page.get_by_label("Workset name").fill(f"layout-{width}")
            await page.set_input_files(
                f"{row} #samples-0-r1-file",
                files=[{"name": "S1_R1.fastq.gz", "mimeType": "application/gzip", "buffer": fastq("S1", 1)}],
            )
            await page.set_input_files(
                f"{row} #samples-0-r2-file",
                files=[{"name": LONG_NAME, "mimeType": "application/gzip", "buffer": fastq("S1", 2)}],
            )
            for mate in (1, 2):
                await expect(page.locator(f"#samples-0-r{mate}")).to_have_value(
                    re.compile(r"^s3://"), timeout=30000
                )
            r1 = (await whole(page, f"{row} #samples-0-r1-file-name", 1, problems, where))[0]
            assert r1["text"] == r1["title"] == "S1_R1.fastq.gz", where
            r2 = (await page.locator(f"{row} #samples-0-r2-file-name").evaluate_all(MEASURE))[0]
            cell = (await page.locator(f"{row} td:has(#samples-0-r2-file)").evaluate_all(MEASURE))[0]
            assert r2["text"] == r2["title"] == LONG_NAME and r2["ellipsis"], f"{where}: {r2}"
            assert r2["width"] > 40 and r2["right"] <= cell["right"], f"{where}: {r2} in {cell}"
            await shoot(page, stack, f"new-workset-files-chosen-{'phone' if width == PHONE else 'desktop'}")
        await ctx.close()

    # The operator's longer row of links, on a phone.
    phone = await context(chromium, width=PHONE)
    page = await phone.new_page()
    await sign_in(page, stack, operator)
    await page.goto(f"{stack.url}/worksets/new")
    assert await nav_within_screen(page, problems, f"operator, {PHONE}px") >= 12
    await shoot(page, stack, "ops-new-workset-phone")
    await phone.close()
    assert not problems, "\n".join(problems)
