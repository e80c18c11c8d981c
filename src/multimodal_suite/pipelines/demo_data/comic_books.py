"""Sample comic books in the layout real collections have, with their CoSMo-format annotations.

A book is planned first (page classes and CoSMo annotation ranges, :func:`plan_books`), then drawn page by page
(:func:`render_book`). The planner follows real book structures: a cover at page 0, stories opening with a
first-page, advertisements between stories and at the back, a textstory or two, now and then an unlabelled page,
credits, a pin-up (art), a letters page (text) or a back cover.

Context matters by construction: covers and back covers are drawn by the same renderer, and first-pages differ
from story pages only by a title splash that most first-pages and a few story pages have, so position and
neighbours tell them apart. The other classes have a layout and word signature, with deliberate overlap
(comic-strip advertisements, illustrated textstories, text pages with order forms).
"""
from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from multimodal_suite.common.comics.annotations import CLASS_INDEX, CLASS_NAMES, IGNORE_LABEL, RANGE_ORDER

from .broken_inputs import truncated_jpeg, zero_byte_file
from .drawing import (
    RGB,
    Box,
    as_xywh,
    draw_block_letters,
    draw_figure,
    draw_speech_bubble,
    draw_text_lines,
    encode_jpeg,
    grid_boxes,
    tint,
)
from .params import DemoBooksConfig

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# Words: class-dependent vocabularies mixed with a shared pool, so word counts inform but do not decide a class.

NAMES = "Rex Dolly Hawk Vera Ace Jinx Marla Duke Sparky Nell Zorro Brock Luna Gus Kit Blaze".split()
DIALOGUE = (
    "hey look out we can't what now run stop you there he she they got gotta never help quick here come it's "
    "him them ha boy gee gosh wait listen yes no why where this that go get down up back tonight hurry watch "
    "trouble all right grab gun fast hold on too late sheriff gang boss kid"
).split()
AD = (
    "buy now price only send coupon free offer mail today money back guarantee order cents dollars postpaid "
    "address name city state rush new amazing genuine catalog sample write box dept save value"
).split()
COVER = "comics no. issue 10c thrilling adventures featuring plus all new stories big complete monthly".split()
PROSE = (
    "the and of to was he had in his that it with as for on at but they said from night man there been into "
    "would could old time long house door dark eyes face voice away through road river town morning"
).split()
CREDITS = (
    "written by art by pencils inks letters colors editor publisher copyright published monthly entered "
    "second class matter post office printed in u.s.a. all rights reserved"
).split()
LETTERS = "dear editor letters readers your fan club next issue write us thanks favorite page contest winners".split()
ART = "pin-up gallery portrait special feature".split()
SHARED = DIALOGUE + AD + COVER + PROSE + CREDITS + LETTERS
TITLE_WORDS = (
    "Curse Gold Shadow River Doom Canyon Secret Phantom Raiders Midnight Iron Jungle Outlaw Star Fury Silver "
    "Ghost Trail Thunder Island Tomb Mask Wolf Harbor"
).split()
SERIES = ["Thrilling Tales", "Mystery Comics", "Frontier Western", "Jungle Action", "Space Patrol", "Crime Busters"]


def _words(rng: random.Random, vocab: list[str], count: int, mix: float) -> list[str]:
    """``count`` words, each from ``vocab`` or (with probability ``mix``) from the shared pool."""
    return [rng.choice(SHARED) if rng.random() < mix else rng.choice(vocab) for _ in range(count)]


def _sentence(
    rng: random.Random, vocab: list[str], low: int, high: int, mix: float, names: tuple[str, ...] = ()
) -> str:
    words = _words(rng, vocab, rng.randint(low, high), mix)
    if names and rng.random() < 0.35:
        words.insert(rng.randrange(len(words) + 1), rng.choice(names))
    return " ".join(words)


def _bubble_text(rng: random.Random, names: tuple[str, ...]) -> str:
    """A speech balloon: upper case, like the lettering comic OCR returns."""
    return (_sentence(rng, DIALOGUE, 3, 9, 0.2, names) + rng.choice(["!", "!", "?", "...", "."])).upper()


# ---------------------------------------------------------------------------------------------------------------
# The look of a book.


@dataclass(frozen=True)
class BookStyle:
    """Per-book look: a printing run has one paper, one ink and one palette, with small per-page jitter."""

    paper: RGB
    ink: RGB
    palette: tuple[RGB, ...]
    gutter: int
    border: int

    @classmethod
    def sample(cls, rng: random.Random) -> "BookStyle":
        tone = rng.randint(215, 245)
        paper = (tone + rng.randint(0, 10), tone, tone - rng.randint(10, 35))
        ink = (rng.randint(10, 40),) * 3
        palette = tuple((rng.randint(40, 230), rng.randint(40, 230), rng.randint(40, 230)) for _ in range(5))
        return cls(paper=paper, ink=ink, palette=palette, gutter=rng.randint(3, 6), border=rng.randint(1, 2))


def _panel(draw: ImageDraw.ImageDraw, rng: random.Random, box: Box, style: BookStyle, bubbles: int) -> None:
    """A comic panel: tinted background, one or two figures, ``bubbles`` speech balloons, an ink border."""
    x0, y0, x1, y1 = box
    draw.rectangle(box, fill=tint(rng.choice(style.palette), style.paper, rng.uniform(0.35, 0.75)))
    if rng.random() < 0.5:  # a horizon or a wall gives the panel some structure
        horizon = y0 + int((y1 - y0) * rng.uniform(0.5, 0.8))
        draw.rectangle((x0, horizon, x1, y1), fill=tint(rng.choice(style.palette), style.paper, 0.3))
    for _ in range(rng.randint(1, 2)):
        fx = x0 + rng.randint(0, max(0, (x1 - x0) // 2))
        figure_box = (fx, y0 + (y1 - y0) // 4, min(x1, fx + (x1 - x0) // 2 + 4), y1)
        draw_figure(draw, rng, figure_box, style.palette, style.ink)
    for _ in range(bubbles):
        draw_speech_bubble(draw, rng, box, style.ink)
    draw.rectangle(box, outline=style.ink, width=style.border)


# ---------------------------------------------------------------------------------------------------------------
# Page renderers: one per look. Each draws on a blank page and returns (OCR text, panels [{"bbox", "text"}]).


@dataclass
class PageContext:
    """What a page renderer may use: the canvas, the book's look, and the story the page belongs to."""

    image: Image.Image
    draw: ImageDraw.ImageDraw
    rng: random.Random
    style: BookStyle
    story_title: str = ""
    names: tuple[str, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


PageRenderer = Callable[[PageContext], tuple[str, list[dict[str, Any]]]]


def _comic_page(ctx: PageContext, splash: bool, rows: tuple[int, int] = (3, 4)) -> tuple[str, list[dict[str, Any]]]:
    """A panel grid, optionally under a title splash (the first page of a story usually has one)."""
    rng, style, draw = ctx.rng, ctx.style, ctx.draw
    w, h = ctx.size
    margin = rng.randint(6, 10)
    top = margin
    texts: list[str] = []
    panels: list[dict[str, Any]] = []
    if splash:
        splash_box = (margin, margin, w - margin, margin + int(h * rng.uniform(0.25, 0.38)))
        _panel(draw, rng, splash_box, style, bubbles=0)
        letters_box = (splash_box[0] + 6, splash_box[1] + 5, splash_box[2] - 6, splash_box[1] + 24)
        draw_block_letters(draw, rng, letters_box, rng.choice(style.palette), style.ink)
        title = ctx.story_title.upper() if ctx.story_title else " ".join(rng.sample(TITLE_WORDS, 2)).upper()
        texts.append(title)
        panels.append({"bbox": as_xywh(splash_box), "text": title})
        top = splash_box[3] + style.gutter
    grid_rows = rng.randint(*rows) - (1 if splash else 0)
    for box in grid_boxes(rng, (margin, top, w - margin, h - margin), grid_rows, style.gutter):
        bubbles = rng.choice([0, 1, 1, 2])
        _panel(draw, rng, box, style, bubbles)
        text = " ".join(_bubble_text(rng, ctx.names) for _ in range(bubbles))
        texts.append(text)
        panels.append({"bbox": as_xywh(box), "text": text})
    return " ".join(t for t in texts if t), panels


def render_story(ctx: PageContext) -> tuple[str, list[dict[str, Any]]]:
    return _comic_page(ctx, splash=ctx.rng.random() < 0.08)


def render_first_page(ctx: PageContext) -> tuple[str, list[dict[str, Any]]]:
    return _comic_page(ctx, splash=ctx.rng.random() < 0.75)


def render_cover(ctx: PageContext) -> tuple[str, list[dict[str, Any]]]:
    """Front and back covers alike: full-bleed colour, masthead, a big figure, a price box."""
    rng, style, draw = ctx.rng, ctx.style, ctx.draw
    w, h = ctx.size
    draw.rectangle((0, 0, w, h), fill=rng.choice(style.palette))
    mast_h = int(h * rng.uniform(0.15, 0.24))
    draw.rectangle((0, 0, w, mast_h), fill=rng.choice(style.palette), outline=style.ink)
    draw_block_letters(draw, rng, (8, 6, w - 8, mast_h - 6), (245, 245, 240), style.ink)
    draw_figure(draw, rng, (w // 6, mast_h + 10, 5 * w // 6, h - 20), style.palette, style.ink)
    if rng.random() < 0.6:
        draw.rectangle((4, 4, 30, 30), fill=(250, 250, 250), outline=style.ink)
    if rng.random() < 0.5:
        draw.rectangle((0, h - 18, w, h), fill=style.ink)
    text = " ".join(_words(rng, COVER, rng.randint(5, 18), 0.2)).upper()
    return text, [{"bbox": [0, mast_h, w, h - mast_h], "text": ""}]


def render_advertisement(ctx: PageContext) -> tuple[str, list[dict[str, Any]]]:
    """Mostly a catalogue page (headline, products, small print, coupon); sometimes a comic-strip ad whose
    balloons read like a story, or a house ad showing another comic's cover."""
    rng, style, draw = ctx.rng, ctx.style, ctx.draw
    w, h = ctx.size
    kind = rng.random()
    if kind < 0.1:
        cover_text, panels = render_cover(ctx)
        return cover_text + " " + " ".join(_words(rng, AD, rng.randint(4, 12), 0.3)), panels
    if kind < 0.35:
        draw.rectangle((0, 0, w, h), fill=style.paper)
        draw.rectangle((8, 8, w - 8, 40), fill=rng.choice(style.palette), outline=style.ink)
        draw_block_letters(draw, rng, (12, 12, w - 12, 36), style.ink, style.ink)
        panels = []
        for box in grid_boxes(rng, (8, 46, w - 8, h - 8), rng.randint(4, 5), style.gutter):
            bubbles = rng.choice([0, 1, 1])
            _panel(draw, rng, box, style, bubbles)
            panels.append({"bbox": as_xywh(box), "text": " ".join(_bubble_text(rng, ()) for _ in range(bubbles))})
        pitch = " ".join(_words(rng, AD, rng.randint(6, 20), 0.3))
        return " ".join(panel["text"] for panel in panels if panel["text"]) + " " + pitch, panels
    ad_text = " ".join(_words(rng, AD, rng.randint(30, 90), 0.3))
    draw.rectangle((0, 0, w, h), fill=(248, 248, 246) if rng.random() < 0.7 else style.paper)
    draw_block_letters(draw, rng, (10, 8, w - 10, 8 + rng.randint(18, 30)), style.ink, style.ink)
    y = 48
    for _ in range(rng.randint(1, 3)):
        bh = rng.randint(35, 60)
        bx = rng.randint(8, w // 2)
        draw.rectangle((bx, y, bx + rng.randint(50, 90), y + bh), fill=rng.choice(style.palette), outline=style.ink)
        draw_text_lines(draw, rng, (10, y, max(10, bx - 6), y + bh), style.ink, pitch=3)
        y += bh + 6
    draw_text_lines(draw, rng, (10, y, w - 10, h - 75), style.ink, pitch=3)
    if rng.random() < 0.5:
        draw.ellipse((w - 50, 50, w - 10, 90), fill=(220, 40, 40), outline=style.ink)
    coupon = (10, h - 68, w - 10, h - 10)
    for x in range(coupon[0], coupon[2], 8):  # the dashed cut-out border of an order form
        draw.line((x, coupon[1], x + 4, coupon[1]), fill=style.ink)
        draw.line((x, coupon[3], x + 4, coupon[3]), fill=style.ink)
    draw_text_lines(draw, rng, (16, h - 60, w - 16, h - 16), style.ink, pitch=6)
    return ad_text, []


def render_textstory(ctx: PageContext) -> tuple[str, list[dict[str, Any]]]:
    """Two columns of small print under a short title, sometimes with an illustration."""
    rng, style, draw = ctx.rng, ctx.style, ctx.draw
    w, h = ctx.size
    draw.rectangle((0, 0, w, h), fill=style.paper)
    draw.rectangle((12, 10, w - rng.randint(40, 90), 18), fill=style.ink)
    col_w = (w - 30) // 2
    for col in range(2):
        x = 10 + col * (col_w + 10)
        draw_text_lines(draw, rng, (x, 26, x + col_w, h - 12), style.ink, pitch=4)
    if rng.random() < 0.4:  # an illustration set into the right column
        _panel(draw, rng, (w // 2 + 4, 26, w - 10, 26 + rng.randint(50, 110)), style, bubbles=0)
    prose = " ".join(_words(rng, PROSE, rng.randint(180, 320), 0.25))
    return (ctx.story_title.upper() + " " if ctx.story_title else "") + prose, []


def render_text(ctx: PageContext) -> tuple[str, list[dict[str, Any]]]:
    """A letters or editorial page: headed paragraphs, one or two columns, now and then an order form."""
    rng, style, draw = ctx.rng, ctx.style, ctx.draw
    w, h = ctx.size
    draw.rectangle((0, 0, w, h), fill=style.paper)
    draw.rectangle((10, 8, w - 10, 30), fill=rng.choice(style.palette), outline=style.ink)
    cols = rng.choice([1, 2])
    col_w = (w - 20 - 10 * (cols - 1)) // cols
    bottom = h - 70 if rng.random() < 0.3 else h - 10
    for col in range(cols):
        x, y = 10 + col * (col_w + 10), 38
        while y < bottom - 20:
            draw.rectangle((x, y, x + rng.randint(col_w // 3, col_w // 2), y + 2), fill=style.ink)
            para = rng.randint(18, 48)
            draw_text_lines(draw, rng, (x, y + 6, x + col_w, min(bottom, y + 6 + para)), style.ink, pitch=4)
            y += para + 14
    if bottom < h - 10:
        draw.rectangle((10, h - 62, w - 10, h - 10), outline=style.ink)
        draw_text_lines(draw, rng, (16, h - 56, w - 16, h - 16), style.ink, pitch=6)
    # Letters pages read like readers' mail; editorials read like prose, as textstories do.
    vocab = LETTERS + PROSE if rng.random() < 0.6 else PROSE
    return " ".join(_words(rng, vocab, rng.randint(120, 250), 0.3)), []


def render_credits(ctx: PageContext) -> tuple[str, list[dict[str, Any]]]:
    """Sparse centred lines under a logo: the indicia and credits page."""
    rng, style, draw = ctx.rng, ctx.style, ctx.draw
    w, h = ctx.size
    draw.rectangle((0, 0, w, h), fill=(246, 246, 244) if rng.random() < 0.6 else style.paper)
    draw.ellipse((w // 2 - 30, 20, w // 2 + 30, 70), fill=rng.choice(style.palette), outline=style.ink)
    y = 90
    for _ in range(rng.randint(6, 12)):
        half = rng.randint(20, 70)
        draw.rectangle((w // 2 - half, y, w // 2 + half, y + 2), fill=style.ink)
        y += rng.randint(10, 18)
    return " ".join(_words(rng, CREDITS, rng.randint(15, 40), 0.2)), []


def render_art(ctx: PageContext) -> tuple[str, list[dict[str, Any]]]:
    """A pin-up: one framed full-page illustration, sometimes captioned."""
    rng, style, draw = ctx.rng, ctx.style, ctx.draw
    w, h = ctx.size
    draw.rectangle((0, 0, w, h), fill=style.paper)
    frame = (10, 10, w - 10, h - (30 if rng.random() < 0.5 else 10))
    draw.rectangle(frame, fill=tint(rng.choice(style.palette), style.paper, 0.2), outline=style.ink, width=2)
    draw_figure(draw, rng, (frame[0] + 20, frame[1] + 20, frame[2] - 20, frame[3] - 5), style.palette, style.ink)
    if frame[3] < h - 10:
        draw.rectangle((30, h - 20, w - 30, h - 17), fill=style.ink)
    return " ".join(_words(rng, ART, rng.randint(0, 8), 0.2)), [{"bbox": as_xywh(frame), "text": ""}]


def render_unlabelled(ctx: PageContext) -> tuple[str, list[dict[str, Any]]]:
    """Pages annotators skipped: mostly near-blank (inside covers, tear-outs), else any other look."""
    rng = ctx.rng
    if rng.random() < 0.5:
        w, h = ctx.size
        ctx.draw.rectangle((0, 0, w, h), fill=ctx.style.paper)
        for _ in range(rng.randint(0, 3)):
            y = rng.randint(20, h - 20)
            faint = tint(ctx.style.ink, ctx.style.paper, 0.7)
            ctx.draw.line((rng.randint(0, w // 2), y, rng.randint(w // 2, w), y), fill=faint)
        return " ".join(_words(rng, SHARED, rng.randint(0, 12), 1.0)), []
    return rng.choice([render_art, render_text, render_advertisement])(ctx)


PAGE_RENDERERS: dict[int, PageRenderer] = {
    CLASS_INDEX["advertisement"]: render_advertisement,
    CLASS_INDEX["cover"]: render_cover,
    CLASS_INDEX["story"]: render_story,
    CLASS_INDEX["textstory"]: render_textstory,
    CLASS_INDEX["first-page"]: render_first_page,
    CLASS_INDEX["credits"]: render_credits,
    CLASS_INDEX["art"]: render_art,
    CLASS_INDEX["text"]: render_text,
    CLASS_INDEX["back_cover"]: render_cover,  # same look on purpose: only position tells them apart
    IGNORE_LABEL: render_unlabelled,
}


# ---------------------------------------------------------------------------------------------------------------
# Book planning: page classes and the CoSMo annotation that describes them.

RANGE_KEY_OF_CLASS = {name: key for key, name in RANGE_ORDER}
STORY_LENGTHS = list(range(1, 16))
# Story lengths in pages, shaped like the CoSMo splits (6–8 pages most common, many one-pagers).
STORY_LENGTH_WEIGHTS = [12, 4, 3, 5, 8, 13, 13, 8, 4, 4, 2, 3, 2, 1, 1]


@dataclass
class BookPlan:
    """One sample book: page classes (ground truth), per-page story context, and its CoSMo record.

    ``labels`` is what :func:`~multimodal_suite.common.comics.annotations.book_page_labels` must read back from
    ``annotation`` for the book's true length (the deliberately broken ranges only add rejects).
    """

    book_id: str
    title: str
    labels: list[int]
    story_titles: list[str]
    story_names: list[tuple[str, ...]]
    annotation: dict[str, Any]
    padded: bool = True
    on_disk: bool = True
    zero_byte_pages: tuple[int, ...] = ()
    truncated_pages: tuple[int, ...] = ()
    ocr_missing_pages: tuple[int, ...] = ()
    ocr_empty_pages: tuple[int, ...] = ()
    ocr_malformed_pages: tuple[int, ...] = ()
    seed: int = 0

    @property
    def num_pages(self) -> int:
        return len(self.labels)

    def image_name(self, page: int) -> str:
        width = max(3, len(str(self.num_pages - 1)))
        return f"{page:0{width}d}" if self.padded else str(page)


@dataclass
class _BookBuilder:
    """Appends page runs to a book and keeps labels and annotation ranges in step."""

    rng: random.Random
    labels: list[int] = field(default_factory=list)
    story_titles: list[str] = field(default_factory=list)
    story_names: list[tuple[str, ...]] = field(default_factory=list)
    ranges: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {key: [] for key, _ in RANGE_ORDER})

    @property
    def cursor(self) -> int:
        return len(self.labels)

    def add_range(self, class_name: str, start: int, end: int, title: str) -> None:
        item: dict[str, Any] = {"title": title, "page_start": start, "page_end": end}
        if start == end and self.rng.random() < 0.3:
            # Real files write one-page ranges both ways: page_end absent, or null.
            if self.rng.random() < 0.5:
                del item["page_end"]
            else:
                item["page_end"] = None
        self.ranges[RANGE_KEY_OF_CLASS[class_name]].append(item)

    def pages(self, label: int, count: int, story: str = "", names: tuple[str, ...] = ()) -> int:
        start = self.cursor
        self.labels += [label] * count
        self.story_titles += [story] * count
        self.story_names += [names] * count
        return start

    def single(self, class_name: str, title: str = "") -> None:
        start = self.pages(CLASS_INDEX[class_name], 1)
        self.add_range(class_name, start, start, title)

    def story(self, length: int, room: int) -> None:
        """A story of ``length`` pages within ``room`` pages; sometimes interrupted by an advertisement."""
        rng = self.rng
        title = f"The {rng.choice(TITLE_WORDS)} of the {rng.choice(TITLE_WORDS)}"
        names = tuple(rng.sample(NAMES, 2))
        interrupt = rng.random()
        if length >= 4 and room >= length + 1 and interrupt < 0.2:
            split = rng.randint(2, length - 2)
            start = self.pages(CLASS_INDEX["first-page"], 1, title, names)
            self.pages(CLASS_INDEX["story"], split - 1, title, names)
            ad_page = self.pages(CLASS_INDEX["advertisement"], 1)
            self.add_range("advertisement", ad_page, ad_page, rng.choice(AD).title())
            resume = self.pages(CLASS_INDEX["story"], length - split, title, names)
            if interrupt < 0.1:  # two story ranges, the second titled "... continue" (no first-page)
                self.add_range("story", start, ad_page - 1, title)
                self.add_range("story", resume, self.cursor - 1, f"{title} continue")
            else:  # one story range over the ad page: the later advertisement range wins there
                self.add_range("story", start, self.cursor - 1, title)
            return
        length = min(length, room)
        start = self.pages(CLASS_INDEX["first-page"], 1, title, names)
        self.pages(CLASS_INDEX["story"], length - 1, title, names)
        self.add_range("story", start, self.cursor - 1, title)


def plan_book(rng: random.Random, book_id: str, title: str, num_pages: int) -> BookPlan:
    """Page classes and CoSMo ranges of one book of ``num_pages`` pages."""
    book = _BookBuilder(rng)
    book.single("cover", "Front")
    front = rng.random()
    if front < 0.45:
        book.single("advertisement", "Inside cover")
    elif front < 0.6:
        book.single("credits", "Indicia")
    has_back_cover = rng.random() < 0.35
    back_ads = rng.choice([1, 1, 2, 2, 3])
    body_end = max(book.cursor + 1, num_pages - back_ads - has_back_cover)
    textstories_left = rng.choice([1, 2, 2]) * max(1, num_pages // 50)
    while book.cursor < body_end:
        room = body_end - book.cursor
        book.story(rng.choices(STORY_LENGTHS, STORY_LENGTH_WEIGHTS)[0], room)
        event = rng.random()
        room = body_end - book.cursor
        if room <= 0:
            break
        if event < 0.3:
            for _ in range(min(room, rng.choice([1, 1, 2]))):
                book.single("advertisement", rng.choice(AD).title())
        elif event < 0.48 and textstories_left:
            textstories_left -= 1
            story = f"{rng.choice(TITLE_WORDS)} {rng.choice(TITLE_WORDS)}"
            start = book.pages(CLASS_INDEX["textstory"], min(room, rng.choice([1, 2, 2])), story)
            book.add_range("textstory", start, book.cursor - 1, story)
        elif event < 0.53:
            book.single("art", "Pin-up")
        elif event < 0.59:
            book.single("text", "Letters")
        elif event < 0.62:
            book.pages(IGNORE_LABEL, 1)
        elif event < 0.64:
            book.single("credits", "Staff")
    for _ in range(num_pages - book.cursor - has_back_cover):
        book.single("advertisement", rng.choice(AD).title())
    if has_back_cover:
        book.single("back_cover", "Back")
    record = {"hash_code": book_id, "title": title, **book.ranges}
    return BookPlan(book_id, title, book.labels, book.story_titles, book.story_names, record, seed=rng.randrange(2**32))


def _pick(rng: random.Random, plan: BookPlan, share: float, exclude: set[int]) -> tuple[int, ...]:
    return tuple(page for page in range(plan.num_pages) if page not in exclude and rng.random() < share)


def plan_books(config: DemoBooksConfig) -> list[BookPlan]:
    """The planned collection, in generation order (book ids sorted is the dataset's order).

    With ``bad_inputs``: book 0 has one OCR sidecar of each problem kind (missing, empty, malformed) besides the
    random ones every book has; book 1 a zero-byte page 3; book 2 a truncated JPEG at page 5; book 3 a range
    past its end; book 4 a reversed range; and one more annotated book has no folder on disk (the last plan).
    The long book comes last among the books on disk; the ``unpadded_books`` before it have unpadded names.
    """
    rng = random.Random(config.seed)
    lengths = [rng.randint(config.min_pages, config.max_pages) for _ in range(config.num_books)]
    if config.long_book_pages:
        lengths[-1] = config.long_book_pages
    if config.bad_inputs:
        lengths.append(rng.randint(config.min_pages, config.max_pages))  # annotated, missing from disk
    ids: list[str] = []
    while len(ids) < len(lengths):
        book_id = f"{rng.getrandbits(32):08x}"
        if book_id not in ids:
            ids.append(book_id)
    plans = []
    for index, (book_id, num_pages) in enumerate(zip(ids, lengths)):
        series = SERIES[index % len(SERIES)]
        omnibus = bool(config.long_book_pages) and index == config.num_books - 1
        title = f"{series} Omnibus ({num_pages} pages)" if omnibus else f"{series} {index + 1:03d}"
        plans.append(plan_book(random.Random(f"{config.seed}:{book_id}"), book_id, title, num_pages))

    regular_end = config.num_books - (1 if config.long_book_pages else 0)
    for plan in plans[max(0, regular_end - config.unpadded_books) : regular_end]:
        plan.padded = False
    for plan in plans[: config.num_books]:
        noise = random.Random(f"{config.seed}:{plan.book_id}:ocr")
        plan.ocr_missing_pages = _pick(noise, plan, 0.02, set())
        plan.ocr_empty_pages = _pick(noise, plan, 0.03, set(plan.ocr_missing_pages))
        plan.ocr_malformed_pages = _pick(noise, plan, 0.01, set(plan.ocr_missing_pages) | set(plan.ocr_empty_pages))
    if config.bad_inputs and config.num_books >= 5:
        first = plans[0]
        first.ocr_missing_pages = tuple(sorted(set(first.ocr_missing_pages) - {2, 4} | {1}))
        first.ocr_empty_pages = tuple(sorted(set(first.ocr_empty_pages) - {1, 4} | {2}))
        first.ocr_malformed_pages = tuple(sorted(set(first.ocr_malformed_pages) - {1, 2} | {4}))
        plans[1].zero_byte_pages = (3,)
        plans[2].truncated_pages = (5,)
        last_ad = plans[3].annotation["advertisements"][-1]
        last_ad["page_end"] = plans[3].num_pages + 1  # two pages past the last image
        plans[4].annotation["stories"].append({"title": "Misfiled", "page_start": 9, "page_end": 7})
        plans[-1].on_disk = False
    return plans


# ---------------------------------------------------------------------------------------------------------------
# Rendering.


def _noise_fields(seed: int, size: tuple[int, int], count: int = 3) -> list[np.ndarray]:
    """A few pixel-noise fields per book, rolled per page: scanner grain without a random draw per pixel."""
    generator = np.random.default_rng(seed)
    w, h = size
    return [generator.integers(-5, 6, size=(h, w, 1), dtype=np.int16) for _ in range(count)]


def render_page(
    plan: BookPlan, page: int, style: BookStyle, size: tuple[int, int], noise: list[np.ndarray]
) -> tuple[Image.Image, str, list[dict[str, Any]]]:
    """Draw one page: ``(image, OCR text, panels)``."""
    rng = random.Random(plan.seed * 100_003 + page)
    image = Image.new("RGB", size, style.paper)
    ctx = PageContext(image, ImageDraw.Draw(image), rng, style, plan.story_titles[page], plan.story_names[page])
    text, panels = PAGE_RENDERERS[plan.labels[page]](ctx)
    grain = np.roll(noise[page % len(noise)], shift=rng.randrange(size[0]), axis=1)
    gain = rng.uniform(0.92, 1.05)  # scans differ in exposure page to page
    pixels = np.asarray(image, dtype=np.int16) * gain + grain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), text, panels


def _ocr_bytes(plan: BookPlan, page: int, text: str) -> bytes | None:
    """The OCR sidecar as real collections have it: usually fine, sometimes missing, empty or malformed."""
    if page in plan.ocr_missing_pages:
        return None
    if page in plan.ocr_empty_pages:
        text = ""
    elif page in plan.ocr_malformed_pages:
        # Two kinds seen in the wild: a cut-off file, and a sidecar from another OCR tool.
        if page % 2:
            return json.dumps({"OCRResult": text})[:20].encode("utf-8")
        return json.dumps({"text": text}).encode("utf-8")
    return json.dumps({"OCRResult": text}).encode("utf-8")


def render_book(plan: BookPlan, config: DemoBooksConfig) -> dict[str, bytes]:
    """All files of one book folder, ``{"<book_id>/<file name>": bytes}``."""
    style = BookStyle.sample(random.Random(plan.seed))
    noise = _noise_fields(plan.seed, config.page_size)
    files: dict[str, bytes] = {}
    for page in range(plan.num_pages):
        image, text, panels = render_page(plan, page, style, config.page_size, noise)
        stem = f"{plan.book_id}/{plan.image_name(page)}"
        data = encode_jpeg(image, config.jpeg_quality)
        if page in plan.zero_byte_pages:
            data = zero_byte_file()
        elif page in plan.truncated_pages:
            data = truncated_jpeg(data)
        files[f"{stem}.jpg"] = data
        ocr = _ocr_bytes(plan, page, text)
        if ocr is not None:
            files[f"{stem}.ocr.json"] = ocr
        files[f"{stem}.panels.json"] = json.dumps(panels).encode("utf-8")
    return files


def generate_collection(config: DemoBooksConfig) -> tuple[dict[str, bytes], list[dict[str, Any]]]:
    """The book folders and the CoSMo annotations of ``config``'s collection.

    Returns:
        ``({"<book_id>/<file name>": bytes}, [one CoSMo record per book, sorted by book id])``.
    """
    started = time.perf_counter()
    plans = plan_books(config)
    files: dict[str, bytes] = {}
    on_disk = [plan for plan in plans if plan.on_disk]
    for plan in tqdm(on_disk, desc="rendering sample books", unit="book"):
        files.update(render_book(plan, config))
    annotations = sorted((plan.annotation for plan in plans), key=lambda record: record["hash_code"])
    pages = sum(plan.num_pages for plan in on_disk)
    classes = Counter(CLASS_NAMES[label] if label >= 0 else "unlabelled" for plan in on_disk for label in plan.labels)
    elapsed_s = time.perf_counter() - started
    logger.info(
        "generated %d books (%d pages, %.0f pages/s, %d files) and %d annotation records; classes: %s",
        len(on_disk), pages, pages / max(elapsed_s, 1e-9), len(files), len(annotations), dict(sorted(classes.items())),
    )
    return files, annotations
